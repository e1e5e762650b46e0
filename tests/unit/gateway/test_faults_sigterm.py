"""SIGTERM under load: the listener closes at once (new connections are refused), a request that still
reaches the gateway gets 503 with Retry-After, the streams in flight finish (within
``gateway.shutdown_grace_s``), then the engines stop and the process exits 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from airlock.engines.base import free_port
from airlock.gateway.app import create_app
from airlock.gateway.routing import Router
from airlock.spec import GatewaySpec
from airlock.testing.fake_engine import REPLY
from fault_procs import Streamed, engine_pid, stream
from gateway_procs import CHAT, chat
from harness import wait_healthy
from serve_procs import GatewayProc


async def _after_sigterm(url: str) -> list[int | str]:
    """New requests, each on a fresh connection, until one is refused: the statuses, then "refused".

    A connection that reached the kernel's accept queue in the instant the listener closed is reset
    by the kernel, not answered (the gateway never saw it): that counts as refused too."""
    seen: list[int | str] = []
    for _ in range(200):  # a bound on the loop: the listener closes within uvicorn's 0.1 s tick
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.post(url + CHAT, json=chat("hi"))
        except (httpx.ConnectError, httpx.ReadError):
            seen.append("refused")
            return seen
        seen.append(r.status_code)
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert r.json()["error"]["code"] == "shutting_down"
        await asyncio.sleep(0.02)
    return seen


def test_sigterm_lets_20_streams_finish_refuses_new_requests_and_exits_0(tmp_path: Path) -> None:
    gw = GatewayProc(GatewaySpec(shutdown_grace_s=30, metrics_auth=False), tmp_path, None)
    engine = engine_pid(gw)
    try:

        async def scenario() -> tuple[list[Any], list[int | str]]:
            limits = httpx.Limits(max_connections=20)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                started = [asyncio.Event() for _ in range(20)]
                tasks = [
                    asyncio.create_task(stream(client, gw.url, "please drip", 16, started=event))
                    for event in started
                ]
                await asyncio.gather(*(event.wait() for event in started))
                gw.signal(signal.SIGTERM)
                refused = await _after_sigterm(gw.url)
                return list(await asyncio.gather(*tasks)), refused

        streams, after = asyncio.run(scenario())
        print(f"\nnew requests after SIGTERM: {after}")
        assert after[-1] == "refused"
        every = (200, True, len(REPLY.split()) + 2)  # each token, the final chunk, [DONE]
        assert [(s.status, s.done, len(s.events)) for s in streams] == [every] * 20
        assert gw.proc.wait(60) == 0
        assert gw.proc.stdout is not None and gw.proc.stdout.read().strip() == "STOPPED"
        assert not Path(f"/proc/{engine}").exists()  # the engine was stopped (and reaped) after the drain
    finally:
        gw.stop()


def test_airlock_serve_itself_drains_20_streams_on_sigterm_and_exits_0(tmp_path: Path) -> None:
    port = free_port()
    engine = subprocess.Popen(
        [sys.executable, "-m", "airlock.testing.fake_engine", "--port", str(port), "--model", "tiny"]
    )
    spec = tmp_path / "airlock.yaml"
    spec.write_text(
        "gateway: {shutdown_grace_s: 30}\n"
        f"models: [{{name: tiny, engine: {{kind: remote, url: 'http://127.0.0.1:{port}/v1'}}}}]\n"
    )
    env = {**os.environ, "AIRLOCK_HOME": str(tmp_path / "home"), "AIRLOCK_CACHE": str(tmp_path / "cache")}
    serve = subprocess.Popen(
        [sys.executable, "-m", "airlock.cli.main", "serve", "--config", str(spec), "--port", "0", "--no-auth"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", engine, what="the fake engine")
        assert serve.stderr is not None
        url = None
        while url is None:  # bounded by serve's own start timeout: it prints "ready" or exits
            line = serve.stderr.readline()
            assert line or serve.poll() is None, "airlock serve exited before it was ready"
            if m := re.search(r"ready: (http://127\.0\.0\.1:\d+)/v1", line):
                url = m.group(1)

        async def scenario(url: str) -> tuple[list[Streamed], list[int | str]]:
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=20)) as client:
                started = [asyncio.Event() for _ in range(20)]
                tasks = [
                    asyncio.create_task(stream(client, url, "please drip", 16, started=event))
                    for event in started
                ]
                await asyncio.gather(*(event.wait() for event in started))
                serve.send_signal(signal.SIGTERM)
                refused = await _after_sigterm(url)
                return list(await asyncio.gather(*tasks)), refused

        streams, after = asyncio.run(scenario(url))
        print(f"\nnew requests after SIGTERM: {after}")
        assert after[-1] == "refused"
        assert [(s.status, s.done) for s in streams] == [(200, True)] * 20
        _, rest = serve.communicate(timeout=60)
        assert serve.returncode == 0, rest
        assert "airlock: stopped" in rest
    finally:
        for proc in (serve, engine):
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def test_with_workers_new_connections_are_refused_while_a_stream_finishes(tmp_path: Path) -> None:
    # the parent holds the listening socket too: open, it would queue new connections unanswered
    gw = GatewayProc(GatewaySpec(workers=2, metrics_auth=False), tmp_path, None)
    try:

        async def scenario() -> tuple[Streamed, bool]:
            async with httpx.AsyncClient(timeout=60) as client:
                started = asyncio.Event()
                task = asyncio.create_task(stream(client, gw.url, "please drip", 16, started=started))
                await started.wait()
                gw.signal(signal.SIGTERM)
                refused = False
                for _ in range(200):  # bounded: until the last copy of the listener is closed
                    try:
                        async with httpx.AsyncClient(timeout=30) as fresh:
                            await fresh.post(gw.url + CHAT, json=chat("hi"))
                    except httpx.ConnectError:
                        refused = not task.done()  # refused while the stream was still being served
                        break
                    except httpx.TransportError:
                        pass  # accepted just as a worker closed its listener: reset
                    await asyncio.sleep(0.02)
                return await task, refused

        streamed, refused = asyncio.run(scenario())
        assert refused
        assert streamed.done
        assert gw.proc.wait(60) == 0
    finally:
        gw.stop()


def test_a_stream_longer_than_the_grace_is_cut_and_the_process_still_exits_0(tmp_path: Path) -> None:
    gw = GatewayProc(GatewaySpec(shutdown_grace_s=1, metrics_auth=False), tmp_path, None)
    try:

        async def scenario() -> Streamed:
            async with httpx.AsyncClient(timeout=60) as client:
                started = asyncio.Event()
                task = asyncio.create_task(stream(client, gw.url, "please hang please drip", started=started))
                await started.wait()
                gw.signal(signal.SIGTERM)
                return await task

        cut = asyncio.run(scenario())
        assert cut.status == 200 and not cut.done
        assert cut.error is not None and cut.error["error"]["code"] == "shutting_down"  # told in-band
        assert gw.proc.wait(60) == 0
    finally:
        gw.stop()


def test_a_draining_gateway_answers_503_with_retry_after_and_is_not_ready() -> None:
    app = create_app(GatewaySpec(), Router([]), None)
    app.drain()

    async def call(method: str, path: str) -> tuple[int, dict[bytes, bytes], Any]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": orjson.dumps(chat("hi")), "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "headers": [], "client": ("127.0.0.1", 1)}
        await app(scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"]), orjson.loads(sent[1]["body"])

    status, headers, body = asyncio.run(call("POST", CHAT))
    assert (status, headers[b"retry-after"], headers[b"connection"]) == (503, b"5", b"close")
    assert body["error"]["code"] == "shutting_down"
    status, _, body = asyncio.run(call("GET", "/ready"))
    assert (status, body["ready"], body["draining"]) == (503, False, True)
