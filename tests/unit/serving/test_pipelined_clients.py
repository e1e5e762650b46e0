"""Pipelined requests against the header guards (airlock.serving.protocol): a guard's answer for the
next request never lands inside or before the answer to the one in flight, and a pipelined request's
body is not counted as the next request's header."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator

import pytest

from airlock.spec import GatewaySpec
from harness import GatewayThread, fake_engine_config
from unit.serving.test_slow_clients import _connect, _read_all

LIMIT = 8192


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    gateway = GatewaySpec(auth=False, header_timeout_s=1.0, max_header_bytes=LIMIT)
    with GatewayThread(
        [fake_engine_config("tiny")], tmp_path_factory.mktemp("logs"), gateway=gateway
    ) as thread:
        yield thread


def _post(body: bytes) -> bytes:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _stream(words: int) -> bytes:
    # "please drip": the fake engine sends a token every 0.2 s, so the stream outlasts the header timeout
    prompt = "please drip " + "w " * words
    return json.dumps(
        {
            "model": "tiny",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": words,
            "stream": True,
        }
    ).encode()


def _status_lines(answer: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", answer)  # a response may follow a body directly


def test_a_too_large_header_pipelined_behind_a_stream_is_answered_after_it(gw: GatewayThread) -> None:
    with _connect(gw.url) as sock:
        huge = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (2 * LIMIT) + b"\r\n\r\n"
        sock.sendall(_post(_stream(5)) + huge)
        answer = _read_all(sock)
    assert _status_lines(answer) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 431 Request Header Fields Too Large"]
    assert answer.index(b"data: [DONE]") < answer.index(b"HTTP/1.1 431"), "the stream is whole, then the 431"


def test_a_half_header_sent_during_a_stream_does_not_cut_it(gw: GatewayThread) -> None:
    with _connect(gw.url) as sock:
        sock.sendall(_post(_stream(10)))  # ~2 s of stream, twice the header timeout
        time.sleep(0.3)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # the next request begins early, half
        answer = _read_all(sock)
    assert _status_lines(answer) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 408 Request Timeout"]
    assert answer.index(b"data: [DONE]") < answer.index(b"HTTP/1.1 408"), "the 408 follows the whole stream"


def test_a_large_body_is_not_counted_as_the_next_pipelined_header(gw: GatewayThread) -> None:
    content = "x" * (3 * LIMIT)
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 2})
    with _connect(gw.url) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.sendall(_post(body.encode()) + b"GET /health HTTP/1.1\r\nHost: x\r\n")  # one write
        time.sleep(0.2)
        sock.sendall(b"Connection: close\r\n\r\n")
        answer = _read_all(sock)
    assert _status_lines(answer) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"], answer[-300:]
    assert answer.endswith(b'{"status":"ok"}')
