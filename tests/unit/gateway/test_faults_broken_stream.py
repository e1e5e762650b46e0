"""An engine that dies in the middle of an event: the client gets the complete events, then one
error event it can parse; the half event is not glued to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from airlock.engines.base import EngineConfig
from harness import GatewayThread, protocol_server

WHOLE = b'data: {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n'
HALF = b'data: {"id": "x", "object": "chat.compl'


class BreakingEngine(asyncio.Protocol):
    """Answers any POST with a chunked event stream: one whole event, half of the next, then the
    connection closes (no last chunk), as an engine killed mid-write leaves it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        if not self.buf.startswith(b"POST"):  # the supervisor's probe: GET /v1/models
            self.buf = self.buf[end + 4 :]
            models = b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(models), models))
            return
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (WHOLE, HALF))
        self.transport.write(head + chunks)
        self.transport.close()


@pytest.fixture
def engine() -> Iterator[str]:
    with protocol_server(BreakingEngine) as url:
        yield url


def test_an_engine_dying_mid_event_gives_whole_events_then_a_parseable_error(
    engine: str, tmp_path: Path
) -> None:
    config = EngineConfig(
        name="m", kind="remote", base_url=engine, upstream_model="m", launch=None, health_path=None
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with GatewayThread([config], tmp_path) as gw, httpx.Client(base_url=gw.url) as http:
        r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    events = [e for e in r.content.split(b"\n\n") if e.strip()]
    assert events[0] + b"\n\n" == WHOLE
    assert len(events) == 2, events
    assert events[1].startswith(b"data: ") and b"\n" not in events[1]
    error = json.loads(events[1].removeprefix(b"data: "))["error"]
    assert (error["type"], error["message"]) == (
        "server_error",
        "the engine broke off the stream (connection closed mid-answer)",
    )
