"""A client that stops reading a stream: once the connection's buffers are full the gateway's writes
wait, and after ``gateway.stream_send_timeout_s`` of that the stream is dropped (the connection
reset, the engine's request cancelled, its slot freed) while other clients stream on."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from airlock.spec import GatewaySpec
from fault_procs import engine_url, metric, metrics, open_fds, stream
from gateway_procs import CHAT, chat
from serve_procs import GatewayProc, wait_for


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[GatewayProc]:
    # three slots and no queue: a request finding them all taken is refused at once (503)
    spec = GatewaySpec(stream_send_timeout_s=1.0, metrics_auth=False, engine_concurrency=3, engine_queue=0)
    proc = GatewayProc(spec, tmp_path, None)
    yield proc
    assert proc.stop() == 0


def _stalled_client(url: str) -> socket.socket:
    """A raw connection that asks for an endless stream and never reads a byte of it."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    body = json.dumps(chat("please hang", max_tokens=16, stream=True)).encode()
    head = f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    sock.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """Read what is buffered; True once the gateway has closed or reset the connection."""
    try:
        while chunk := sock.recv(1 << 20):
            del chunk
    except ConnectionResetError:
        return True
    except BlockingIOError:
        return False
    return True


def test_a_client_that_stops_reading_is_dropped_and_others_stream_on(gw: GatewayProc) -> None:
    url = gw.url
    fds_before = open_fds(gw.proc.pid)
    stalled = _stalled_client(url)
    stalled.setblocking(False)
    engine = engine_url(gw)
    wait_for(
        "the stalled stream reached the engine", lambda: httpx.get(engine + "/stats").json()["streams"] >= 1
    )

    async def streams(rounds: int, width: int) -> list[bool]:
        async with httpx.AsyncClient(timeout=60) as client:
            done = []
            for _ in range(rounds):
                results = await asyncio.gather(*(stream(client, url, "please drip", 8) for _ in range(width)))
                done += [r.status == 200 and r.done for r in results]
            return done

    # while the stalled stream holds its slot, the other two serve others (none waits on it)
    assert asyncio.run(streams(3, 2)) == [True] * 6
    wait_for(
        "the stalled stream was dropped",
        lambda: metric(metrics(url), "airlock_stream_send_timeouts_total", model="tiny") == 1,
    )
    assert asyncio.run(streams(1, 3)) == [True] * 3  # its slot is free again
    wait_for("the gateway reset the stalled connection", lambda: _closed_by_peer(stalled))
    stalled.close()
    text = metrics(url)
    assert metric(text, "airlock_requests_in_flight", route="/v1/chat/completions") == 0
    assert metric(text, "airlock_requests_total", route="/v1/chat/completions", status="499") == 1
    assert metric(text, "airlock_requests_total", route="/v1/chat/completions", status="200") == 9
    stats = httpx.get(engine + "/stats").json()
    assert stats["cancelled"] == 1  # the engine's request was closed, not left streaming
    assert stats["completed"] == 9
    wait_for("the gateway's descriptors came back", lambda: open_fds(gw.proc.pid) <= fds_before + 4)
    print(f"\ngateway fds {fds_before} -> {open_fds(gw.proc.pid)}; engine stats {stats}")
