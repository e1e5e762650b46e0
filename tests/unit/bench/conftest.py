"""Servers for the bench tests: the fake engine and a scripted server, in-process on virtual time.

Timing tests run client and server on one :class:`~airlock.testing.virtual_time.VirtualTimeLoop`,
talking over an abstract Unix socket (unique per test, so xdist workers never collide): every sleep
takes exactly its length of loop time and none of wall time, and the records' timestamps (the
sender's clock is ``loop.time``) can be asserted exactly. ``launch_fake`` and ``scripted_url``
serve on real loopback ports from a thread, for tests that need a URL (the CLI) but time nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from airlock.bench.client import RequestRecord
from airlock.bench.options import Load, Slo
from airlock.bench.results import BenchResults, RunInfo
from airlock.bench.stats import summarise_level
from airlock.testing.fake_engine import FakeEngine

#: Every stream: the first token after TTFT_S, then one token every TOKEN_DELAY_S.
TTFT_S = 0.1
TOKEN_DELAY_S = 0.02

Launcher = Callable[..., str]


@contextlib.contextmanager
def serve_on_thread(app: web.Application) -> Iterator[str]:
    """Serve ``app`` on a loopback port from its own thread and loop; yield its base URL."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        state["port"] = runner.addresses[0][1]
        state["loop"], state["stop"] = loop, asyncio.Event()
        ready.set()
        loop.run_until_complete(state["stop"].wait())
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10), "the in-process server did not start"
    try:
        yield f"http://127.0.0.1:{state['port']}"
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(10)


@pytest.fixture(scope="module")
def launch_fake() -> Iterator[Launcher]:
    """Start fake engines in-process on real TCP ports (``launch(model=..., ttft=..., token_delay=..., api_key=...)``).

    For tests that need a real URL (the CLI) but measure nothing: the default timings are zero.
    """
    with contextlib.ExitStack() as stack:

        def launch(
            model: str = "fake", ttft: float = 0.0, token_delay: float = 0.0, api_key: str | None = None
        ) -> str:
            engine = FakeEngine(model, token_delay, 0.0, api_key, ttft=ttft)
            return stack.enter_context(serve_on_thread(engine.app()))

        yield launch


@pytest.fixture(scope="module")
def fake_url(launch_fake: Launcher) -> str:
    """A fake engine serving the model ``fake``, answering at once."""
    return launch_fake()


def synthetic_results(
    scale: float = 1.0,
    *,
    levels: tuple[int, ...] = (1, 4),
    workload: str = "synthetic: 100 words, max_tokens 8",
) -> BenchResults:
    """Results built from synthetic records: level n has n x 4 requests; ``scale`` stretches every latency."""
    out = []
    for users in levels:
        records = [
            RequestRecord(
                start=0.1 * i,
                e2e=scale * (0.3 + 0.01 * i),
                ttft=scale * (0.1 + 0.001 * i),
                prompt_tokens=100,
                output_tokens=8,
                chunk_times=tuple(scale * (0.1 + 0.001 * i + 0.02 * k) for k in range(8)),
            )
            for i in range(users * 4)
        ]
        records.append(RequestRecord(start=0.0, e2e=0.01, error="http 503", detail="<b>busy</b>"))
        out.append(
            summarise_level(Load("concurrency", users), records, duration_s=2.0 * scale, slo=Slo(ttft_s=0.15))
        )
    info = RunInfo(
        url="http://127.0.0.1:9/v1", model="m", endpoint="chat", workload=workload, prompt_tokens=100,
        output_tokens=8, ignore_eos=True, requests_per_level=None, duration_per_level_s=30.0,
        slo={"ttft": 0.15}, seed=0, warmup=0, timeout_s=300.0, airlock_version="0", started_at="2025-01-01T00:00:00+00:00",
        finished_at="2025-01-01T00:01:00+00:00", host={"cpus": "2"},
    )  # fmt: skip
    return BenchResults(info=info, levels=out, warnings=["a <warning>"])


@pytest.fixture
def make_results() -> Callable[..., BenchResults]:
    return synthetic_results


# -- a scripted OpenAI-style server, in-process: each request's body["script"] says how to answer ----------


async def _scripted(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    script: dict[str, Any] = body.get("script", {})
    await asyncio.sleep(script.get("sleep", 0.0))
    if script.get("status", 200) != 200:
        return web.Response(status=script["status"], text=script.get("text", "scripted failure"))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Server": "scripted/1"})
    await resp.prepare(request)

    async def event(data: object) -> None:
        await resp.write(b"data: " + json.dumps(data).encode() + b"\n\n")

    if script.get("role_chunk", True):
        await event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None})
    await asyncio.sleep(script.get("ttft", 0.0))
    chunks, per_chunk = script.get("chunks", 4), script.get("tokens_per_chunk", 1)
    for i in range(chunks):
        if i == script.get("error_after"):
            await event({"error": {"message": "scripted stream error", "code": 500}})
            return resp
        if i == script.get("cut_after"):
            assert request.transport is not None
            request.transport.abort()
            return resp
        if i == script.get("end_after"):
            await resp.write_eof()
            return resp
        await event({"choices": [{"index": 0, "delta": {"content": "tok " * per_chunk}}], "usage": None})
        if i < chunks - 1:
            await asyncio.sleep(script.get("delay", 0.0))
    await event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "usage": None})
    if script.get("usage", True) and (body.get("stream_options") or {}).get("include_usage"):
        words = len(str(body["messages"][-1]["content"]).split()) if "messages" in body else 0
        usage = {"prompt_tokens": words + 3, "completion_tokens": chunks * per_chunk}
        await event({"choices": [], "usage": usage})
    await resp.write(b"data: [DONE]\n\n")
    if script.get("close"):  # like llama-server: drop the connection after a stream, unannounced
        await resp.write_eof()
        assert request.transport is not None
        request.transport.close()
    return resp


#: The scripted server's model list unless a test gives its own: two models, no ``root`` fields.
TWO_MODELS: list[dict[str, Any]] = [{"id": "a"}, {"id": "b"}]


def scripted_app(models: list[dict[str, Any]] | None = None) -> web.Application:
    """The scripted server; ``GET /v1/models`` lists ``models`` (OpenAI model objects, default :data:`TWO_MODELS`)."""
    listed = TWO_MODELS if models is None else models

    async def list_models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": listed})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", _scripted)
    app.router.add_post("/v1/completions", _scripted)
    app.router.add_get("/v1/models", list_models)
    return app


def fake_engine_app(model: str = "fake", api_key: str | None = None) -> web.Application:
    """The fake engine with the standard timings, as an app to serve in-process."""
    return FakeEngine(model, TOKEN_DELAY_S, 0.0, api_key, ttft=TTFT_S).app()


@contextlib.asynccontextmanager
async def serve_unix(app: web.Application) -> AsyncIterator[aiohttp.UnixConnector]:
    """Serve ``app`` on the running loop at a fresh abstract Unix socket; yield a connector to it.

    Requests through the connector go to any ``http://host/...`` URL: the host is not resolved.
    """
    path = f"\0airlock-test-{uuid.uuid4().hex}"
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, path).start()
    try:
        yield aiohttp.UnixConnector(path=path, limit=0)
    finally:
        await runner.cleanup()


#: The URL of the in-process servers (the host is never resolved: requests go through the connector).
IN_PROCESS_URL = "http://in-process"


@pytest.fixture(scope="module")
def scripted_url() -> Iterator[str]:
    """The scripted server on real TCP, on its own thread and loop; ``/v1`` base URL."""
    with serve_on_thread(scripted_app()) as url:
        yield url + "/v1"
