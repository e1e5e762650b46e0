"""An engine that drops idle keep-alive connections without saying so (llama-server after a stream).

The fake upstream here answers the first POST on each connection and closes the connection, without
answering, when a second POST arrives on it: what a client sees when it reuses a socket the server
had already given up. The gateway must send the request again on a fresh connection, not answer 503.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from airlock.engines.base import EngineConfig
from harness import GatewayThread, protocol_server

COMPLETION = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    }
).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()


def _answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


class DroppingServer(asyncio.Protocol):
    stats: ClassVar[dict[str, int]] = {"posts": 0, "dropped": 0}
    reset = False  # True: drop with a TCP reset (the client sees ClientOSError), else a clean close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""
        self.posts = 0

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end]
            length = next(
                (
                    int(v)
                    for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])
                    if k.lower() == b"content-length"
                ),
                0,
            )
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            if head.startswith(b"POST"):
                self.posts += 1
                if self.posts > 1:
                    DroppingServer.stats["dropped"] += 1
                    if DroppingServer.reset:
                        sock = self.transport.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.transport.close()
                    return
                DroppingServer.stats["posts"] += 1
                self.transport.write(_answer(COMPLETION))
            else:
                self.transport.write(_answer(MODELS))


@pytest.fixture(params=[False, True], ids=["close", "reset"])
def upstream(request: pytest.FixtureRequest) -> Iterator[str]:
    DroppingServer.stats = {"posts": 0, "dropped": 0}
    DroppingServer.reset = request.param
    with protocol_server(DroppingServer) as url:
        yield url


def test_requests_on_dropped_keepalive_connections_are_resent(upstream: str, tmp_path: Path) -> None:
    config = EngineConfig(
        name="m", kind="remote", base_url=upstream, upstream_model="m", launch=None, health_path=None
    )
    with GatewayThread([config], tmp_path) as gw, httpx.Client(base_url=gw.url) as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        statuses = [http.post("/v1/chat/completions", json=body).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert DroppingServer.stats["dropped"] >= 1, "the test did not exercise a reused connection"
    assert DroppingServer.stats["posts"] == 5
