"""kill -9 of the engine in the middle of 50 streams: each client gets an OpenAI error event and its
stream ends; the supervisor starts the engine again; the gateway's descriptors, memory, engine
slots and per-key concurrency slots come back to their level, and new requests are served."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx

from airlock.gateway.apikeys import KeyLimits, KeyStore
from airlock.spec import GatewaySpec
from fault_procs import Streamed, engine_pid, engine_url, metric, metrics, rss_bytes, settled_fds, stream
from gateway_procs import CHAT, chat
from serve_procs import GatewayProc, wait_for

N = 50


async def _streams(url: str, token: str, content: str, on_started: bool = False) -> list[Streamed]:
    """``N`` streams at once; with ``on_started``, the engine is killed once every one has an event."""
    limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:
        started = [asyncio.Event() for _ in range(N)]
        tasks = [asyncio.create_task(stream(client, url, content, 4, started=e)) for e in started]
        if on_started:
            await asyncio.gather(*(e.wait() for e in started))
            async with httpx.AsyncClient(timeout=10) as other:  # the pool above is full
                text = (await other.get(url + "/metrics")).text
            _DURING.append(metric(text, "airlock_requests_in_flight", route="/v1/chat/completions"))
            os.kill(_ENGINE[0], signal.SIGKILL)
        return list(await asyncio.gather(*tasks))


_ENGINE: list[int] = []
_DURING: list[float] = []  # the in-flight gauge just before the kill


def _ready(url: str) -> dict[str, object]:
    r = httpx.get(url + "/ready", timeout=10)
    engine: dict[str, object] = r.json()["engines"]["tiny"]
    return engine if r.status_code == 200 else {}


def test_kill_9_of_the_engine_mid_stream_is_an_error_event_and_everything_comes_back(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    _, token = store.create("fifty", limits=KeyLimits(concurrency=N))
    # N slots and no queue: a slot that leaked would turn one of the last N requests into a 503
    spec = GatewaySpec(metrics_auth=False, engine_concurrency=N, engine_queue=0)
    gw = GatewayProc(spec, tmp_path, tmp_path / "keys.db")
    try:
        pid = gw.proc.pid
        warm = asyncio.run(_streams(gw.url, token, "please drip"))  # pools, buffers, caches warmed
        assert [(s.status, s.done) for s in warm] == [(200, True)] * N
        fds, rss = settled_fds(pid), rss_bytes(pid)

        _ENGINE[:] = [engine_pid(gw)]
        cut = asyncio.run(_streams(gw.url, token, "please hang please drip", on_started=True))
        assert {s.status for s in cut} == {200}
        assert _DURING == [N]
        errors = [s.error for s in cut]
        assert all(e is not None for e in errors)  # every stream ended with an error event, none hangs
        assert {e["error"]["type"] for e in errors if e} == {"server_error"}
        assert {e["error"]["message"] for e in errors if e} == {
            "the engine broke off the stream (connection closed mid-answer)"
        }

        wait_for("the engine came back", lambda: _ready(gw.url).get("restarts") == 1)
        assert engine_pid(gw) != _ENGINE[0]
        again = asyncio.run(_streams(gw.url, token, "please drip"))
        assert [(s.status, s.done) for s in again] == [(200, True)] * N  # every slot was free again

        text = metrics(gw.url)
        assert metric(text, "airlock_requests_in_flight", route="/v1/chat/completions") == 0
        assert metric(text, "airlock_engine_queued", engine="tiny") == 0
        chat = "/v1/chat/completions"
        assert metric(text, "airlock_requests_total", route=chat, status="200") == 2 * N
        assert metric(text, "airlock_requests_total", route=chat, status="502") == N  # the cut streams
        after_fds, after_rss = settled_fds(pid), rss_bytes(pid)
        print(
            f"\ngateway fds {fds} -> {after_fds}; RSS {rss / 2**20:.1f} -> {after_rss / 2**20:.1f} MiB; "
            f"chat in flight {_DURING[0]:.0f} at the kill -> 0 after"
        )
        assert after_fds <= fds + 5
        assert after_rss <= rss + 16 * 2**20
    finally:
        assert gw.stop() == 0


def test_kill_9_under_plain_requests_is_a_503_with_retry_after(tmp_path: Path) -> None:
    gw = GatewayProc(GatewaySpec(metrics_auth=False), tmp_path, None)
    try:
        engine = engine_url(gw)

        async def scenario() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                body = chat("please wait")  # answered after 3 s
                tasks = [asyncio.create_task(client.post(gw.url + CHAT, json=body)) for _ in range(3)]
                async with httpx.AsyncClient(timeout=10) as other:
                    for _ in range(600):  # a bound: until the engine has all three
                        if (await other.get(engine + "/stats")).json()["requests"] == 3:
                            break
                        await asyncio.sleep(0.05)
                os.kill(engine_pid(gw), signal.SIGKILL)
                return list(await asyncio.gather(*tasks))

        answers = asyncio.run(scenario())
        assert [r.status_code for r in answers] == [503] * 3
        assert {r.headers["retry-after"] for r in answers} == {"2"}
        assert {r.json()["error"]["type"] for r in answers} == {"server_error"}
        print(f"\nplain requests at the kill: {answers[0].json()['error']['message']!r}")
    finally:
        assert gw.stop() == 0
