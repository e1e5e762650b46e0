"""The fake engine as a child process with fixed timings, for bench tests that measure it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from airlock.bench.client import RequestRecord
from airlock.bench.options import Load, Slo
from airlock.bench.results import BenchResults, RunInfo
from airlock.bench.stats import summarise_level
from airlock.engines.base import free_port
from harness import wait_healthy

#: Every stream: the first token after TTFT_S, then one token every TOKEN_DELAY_S.
TTFT_S = 0.1
TOKEN_DELAY_S = 0.02

Launcher = Callable[..., str]


@pytest.fixture(scope="module")
def launch_fake() -> Iterator[Launcher]:
    """Start fake engines (``launch(model=..., ttft=..., token_delay=..., api_key=...)``); stop all after."""
    procs: list[subprocess.Popen[bytes]] = []

    def launch(
        model: str = "fake",
        ttft: float = TTFT_S,
        token_delay: float = TOKEN_DELAY_S,
        api_key: str | None = None,
    ) -> str:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "FAKE_ENGINE_API_KEY"}
        if api_key:
            env["FAKE_ENGINE_API_KEY"] = api_key
        argv = [
            sys.executable, "-m", "airlock.testing.fake_engine", "--port", str(port), "--model", model,
            "--token-delay", str(token_delay), "--ttft", str(ttft),
        ]  # fmt: skip
        proc = subprocess.Popen(argv, env=env)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, what="the fake engine")
        return url

    yield launch
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(10)


@pytest.fixture(scope="module")
def fake_url(launch_fake: Launcher) -> str:
    """A fake engine with the standard timings, serving the model ``fake``."""
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


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "a"}, {"id": "b"}]})


@pytest.fixture(scope="module")
def scripted_url() -> Iterator[str]:
    """An in-process aiohttp server on its own thread and loop; ``/v1`` base URL."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", _scripted)
        app.router.add_post("/v1/completions", _scripted)
        app.router.add_get("/v1/models", _models)
        runner = web.AppRunner(app, handler_cancellation=True)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        state["port"] = runner.addresses[0][1]
        state["loop"], state["stop"] = loop, asyncio.Event()
        ready.set()
        loop.run_until_complete(state["stop"].wait())
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10), "the scripted server did not start"
    yield f"http://127.0.0.1:{state['port']}/v1"
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(10)
