"""One timed request: what counts as the first token, where tokens come from, and each kind of failure.

The scripted server and the sender share one virtual-time loop, so the timings are exact.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import uvloop

from airlock.bench.client import RequestRecord, Sender
from airlock.bench.workload import Prompt
from airlock.engines.base import free_port
from airlock.testing.virtual_time import run_virtual

from .conftest import IN_PROCESS_URL, scripted_app, serve_unix

PROMPT = Prompt(max_tokens=4, messages=({"role": "user", "content": "one two three four five"},))


def _sender(session: aiohttp.ClientSession, url: str, script: dict[str, Any] | None, **kw: Any) -> Sender:
    extra = {"script": script} if script is not None else {}
    return Sender(
        session, url, model=kw.pop("model", "a"), endpoint=kw.pop("endpoint", "chat"),
        extra_body=extra, clock=asyncio.get_running_loop().time, **kw,
    )  # fmt: skip


def send(
    script: dict[str, Any] | None = None,
    *,
    timeout_s: float = 10.0,
    prompt: Prompt = PROMPT,
    **kw: Any,
) -> RequestRecord:
    """One request to the scripted server, in-process on virtual time."""

    async def go() -> RequestRecord:
        async with (
            serve_unix(scripted_app()) as connector,
            aiohttp.ClientSession(connector=connector) as session,
        ):
            sender = _sender(session, IN_PROCESS_URL + "/v1", script, timeout_s=timeout_s, **kw)
            return await sender.send(prompt)

    return run_virtual(go())


def send_tcp(url: str) -> RequestRecord:
    """One request over real TCP (for a refused connection: no server, no timing)."""

    async def go() -> RequestRecord:
        async with aiohttp.ClientSession() as session:
            return await Sender(session, url, model="a", endpoint="chat").send(PROMPT)

    return uvloop.run(go())


def test_body_asks_for_usage_and_keeps_our_fields_last() -> None:
    sender = Sender(
        None,  # type: ignore[arg-type]
        "http://127.0.0.1:1/v1",
        model="m",
        endpoint="completions",
        ignore_eos=True,
        extra_body={"temperature": 0, "max_tokens": 999},
        api_key="k",
    )
    body = sender.body(Prompt(max_tokens=7, text="hi"))
    assert body == {
        "temperature": 0,
        "max_tokens": 7,
        "model": "m",
        "ignore_eos": True,
        "prompt": "hi",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert sender.url == "http://127.0.0.1:1/v1/completions"
    assert sender.headers["Authorization"] == "Bearer k"


def test_first_token_is_the_first_text_not_the_role_chunk() -> None:
    record = send({"ttft": 0.2, "delay": 0.05, "chunks": 5})
    assert record.ok, record.detail
    assert record.ttft is not None and 0.2 <= record.ttft < 0.35  # the role chunk came at once
    assert record.ttft == pytest.approx(0.2)  # virtual time: exactly the scripted wait
    assert record.output_tokens == 5 and record.prompt_tokens == 5 + 3
    assert len(record.chunk_times) == 5
    assert record.itl == pytest.approx(0.05, abs=0.02)
    assert record.e2e is not None and record.e2e >= record.chunk_times[-1]


def test_tokens_come_from_usage_not_from_chunks() -> None:
    record = send({"chunks": 3, "tokens_per_chunk": 4, "delay": 0.05})
    assert record.ok
    assert record.output_tokens == 12 and len(record.chunk_times) == 3
    assert record.itl == pytest.approx((record.chunk_times[-1] - record.chunk_times[0]) / 11)


def test_missing_usage_is_none_not_a_guess() -> None:
    record = send({"chunks": 3, "usage": False})
    assert record.ok and record.output_tokens is None and record.prompt_tokens is None
    assert len(record.chunk_times) == 3 and record.itl is None


@pytest.mark.parametrize(
    ("script", "kind", "detail"),
    [
        ({"status": 503, "text": "overloaded"}, "http 503", "overloaded"),
        ({"status": 429, "text": "slow down"}, "http 429", "slow down"),
        ({"error_after": 2}, "stream error", "scripted stream error"),
        ({"end_after": 2}, "incomplete", "without a finish_reason"),
        ({"cut_after": 2}, "disconnect", ""),
    ],
)
def test_failures_by_kind(script: dict[str, Any], kind: str, detail: str) -> None:
    record = send(script)
    assert record.error == kind
    assert detail in (record.detail or "")
    assert not record.ok and record.e2e is not None


def test_timeout() -> None:
    record = send({"sleep": 2.0}, timeout_s=0.3)
    assert record.error == "timeout" and record.e2e is not None and 0.3 <= record.e2e < 1.5
    assert record.e2e == pytest.approx(0.3)  # virtual time: the timeout, not the server's 2 s
    assert "0.3 s" in (record.detail or "")


def test_connection_refused() -> None:
    record = send_tcp(f"http://127.0.0.1:{free_port()}/v1")
    assert record.error == "connect"


def test_completions_endpoint() -> None:
    record = send({"chunks": 2}, endpoint="completions", prompt=Prompt(max_tokens=2, text="x"))
    assert record.ok and record.output_tokens == 2
