"""Forward one validated request to its engine and the answer back, streamed or whole."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from airlock.gateway.asgi import JSON, BoundedSend, ClientStalled, Send, send_bytes
from airlock.gateway.engine_client import (
    EngineClient,
    EngineDisconnected,
    EngineError,
    EngineResponse,
    EngineUnreachable,
)
from airlock.gateway.errors import APIError, error_body
from airlock.gateway.sse import UsageScanner

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@dataclass
class Outcome:
    """What became of a forwarded request, filled in as it goes: when the client leaves mid-way (or
    right after the last event, before the engine closed the stream), what was seen still counts."""

    status: int = 0
    usage: dict[str, Any] | None = None
    first_byte_s: float | None = None  # seconds from the request's start to the first streamed bytes
    stalled: bool = False  # the client read nothing for the send timeout: the stream was dropped


@dataclass(frozen=True)
class StreamSend:
    """How a stream is written to its client: each write may wait ``timeout_s`` for the client to read
    (then ``abort`` resets the connection; None where the server offers none)."""

    timeout_s: float
    abort: Callable[[], None] | None = None


def upstream_error(status: int, body: bytes) -> bytes:
    """An engine's error body, kept when it already has the OpenAI shape, wrapped when not."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return body
    text = body.decode("utf-8", errors="replace").strip()[:500] or f"the engine answered {status}"
    if isinstance(data, dict) and isinstance(data.get("detail"), str | list):
        text = str(data["detail"])[:500]
    return error_body(status, text)


async def forward(
    client: EngineClient,
    url: str,
    payload: bytes,
    headers: dict[str, str],
    send: Send,
    *,
    stream: bool,
    drop_usage_only: bool,
    started: float,
    outcome: Outcome,
    stream_send: StreamSend | None = None,
) -> None:
    """Forward and answer; ``outcome`` records the status, usage and time to first byte as they come.

    A streamed answer whose client stops reading for ``stream_send.timeout_s`` is dropped: the client's
    connection is reset, the engine's request closed (its slot freed), and ClientStalled raised."""
    try:
        resp = await client.post(url, payload, headers)
        async with resp:
            if resp.status != 200 or not stream:
                body = await resp.read()
                outcome.status = resp.status
                if resp.status != 200:
                    await send_bytes(send, resp.status, upstream_error(resp.status, body))
                    return
                content_type = resp.headers.get("content-type", "application/json").encode("latin-1")
                outcome.usage = _usage(body) if content_type.startswith(JSON) else None
                await send_bytes(send, 200, body, content_type)
                return
            await _stream(
                resp, send, drop_usage_only=drop_usage_only, started=started, outcome=outcome,
                stream_send=stream_send,
            )  # fmt: skip
    except TimeoutError as exc:
        raise APIError(504, "the engine did not answer in time") from exc
    except EngineUnreachable as exc:
        raise APIError(503, f"the engine is not reachable ({exc}); try again shortly",
                       headers={"Retry-After": "2"}) from exc  # fmt: skip
    except EngineDisconnected as exc:  # it died or restarts: the request was not read
        raise APIError(503, f"the engine dropped the request ({exc}); try again shortly",
                       headers={"Retry-After": "2"}) from exc  # fmt: skip
    except EngineError as exc:
        raise APIError(502, f"the engine broke off its answer ({exc})") from exc


def _usage(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


async def _stream(
    resp: EngineResponse,
    send: Send,
    *,
    drop_usage_only: bool,
    started: float,
    outcome: Outcome,
    stream_send: StreamSend | None,
) -> None:
    bounded = None if stream_send is None else BoundedSend(send, stream_send.timeout_s, stream_send.abort)
    try:
        await _relay(resp, bounded or send, drop_usage_only=drop_usage_only, started=started, outcome=outcome)
    except ClientStalled:
        outcome.stalled = True
        raise
    finally:
        if bounded is not None:
            bounded.close()


async def _relay(
    resp: EngineResponse, send: Send, *, drop_usage_only: bool, started: float, outcome: Outcome
) -> None:
    outcome.status = 200
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    scanner = UsageScanner(drop_usage_only=drop_usage_only)
    try:
        while (chunk := await resp.chunk()) is not None:
            if outcome.first_byte_s is None:
                outcome.first_byte_s = time.perf_counter() - started
            out = scanner.feed(chunk)
            outcome.usage = scanner.usage
            if resp.done:  # the last bytes: sent with the stream's end, in one write
                await send({"type": "http.response.body", "body": out + scanner.flush(), "more_body": False})
                return
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
    except EngineError as exc:  # EngineTimeout included
        # The status line is gone already: tell the client in-band, as OpenAI does, and end the stream.
        # A partial event the engine left is dropped: glued on, it would spoil this one.
        event = b"data: " + error_body(502, f"the engine broke off the stream ({exc})") + b"\n\n"
        outcome.status = 502
        await send({"type": "http.response.body", "body": event, "more_body": False})
        return
    except asyncio.CancelledError:
        # The server stops past gateway.shutdown_grace_s (or the client left, and this goes nowhere):
        # end the stream in-band, bounded, before the cancellation goes on.
        message = "the gateway is shutting down; the answer was cut short"
        event = b"data: " + error_body(503, message, code="shutting_down") + b"\n\n"
        outcome.status = 503
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await send({"type": "http.response.body", "body": event, "more_body": False})
        raise
    await send({"type": "http.response.body", "body": scanner.flush(), "more_body": False})
