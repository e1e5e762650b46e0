"""Slow and oversized clients (airlock.serving.protocol): a header that never finishes is closed after
gateway.header_timeout_s, a header over gateway.max_header_bytes gets 431, and connections that never
send a request cannot use up the process's descriptors while a normal client keeps being served."""

from __future__ import annotations

import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from airlock.engines.base import free_port
from airlock.serving.protocol import DEFAULT_MAX_CONNECTIONS, RESERVED_FDS, default_max_connections
from airlock.spec import GatewaySpec
from airlock.testing.registry import write_self_signed
from harness import GatewayThread, fake_engine_config
from serve_procs import LAUNCH, TESTS

GATEWAY = GatewaySpec(auth=False, header_timeout_s=0.5)
CAP = 16


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    with GatewayThread(
        [fake_engine_config("tiny")], tmp_path_factory.mktemp("logs"), gateway=GATEWAY
    ) as thread:
        yield thread


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    gateway = GatewaySpec(auth=False, header_timeout_s=120, max_connections=CAP)
    with GatewayThread(
        [fake_engine_config("tiny")], tmp_path_factory.mktemp("logs"), gateway=gateway
    ) as thread:
        yield thread


def _connect(url: str) -> socket.socket:
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout bounds it)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _is_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except ConnectionError:
        return False
    finally:
        sock.setblocking(True)


def test_a_half_sent_header_is_answered_408_and_closed(gw: GatewayThread) -> None:
    with _connect(gw.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer = _read_all(sock)  # returns only because the server closed the connection
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert b'"code":"request_timeout"' in answer


def test_a_silent_connection_is_closed(gw: GatewayThread) -> None:
    with _connect(gw.url) as sock:
        assert _read_all(sock) == b""


def test_the_timeout_is_armed_again_for_each_request_on_a_kept_alive_connection(gw: GatewayThread) -> None:
    with _connect(gw.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 "), first[:100]
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # the second request's header, half
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


def test_a_body_that_stops_arriving_is_closed(gw: GatewayThread) -> None:
    with _connect(gw.url) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"model": "tiny", '
        )
        assert _read_all(sock) == b""  # closed, no answer: the app saw the client gone


def test_a_slow_but_steady_body_is_served(tmp_path: Path) -> None:
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    gateway = GatewaySpec(auth=False, header_timeout_s=1.0)
    with (
        GatewayThread([fake_engine_config("tiny")], tmp_path, gateway=gateway) as gw,
        _connect(gw.url) as sock,
    ):
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for i in range(0, len(body), 5):  # over several times the timeout, a little at a time
            sock.sendall(body[i : i + 5].encode())
            time.sleep(0.1)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Big: " + b"a" * 200_000 + b"\r\n",  # one long line
        b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(200)),  # many headers
    ],
    ids=["one-200KB-header", "200-headers-of-1KB"],
)
def test_a_200KB_header_gets_431(gw: GatewayThread, headers: bytes) -> None:
    with _connect(gw.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b'"code":"request_header_fields_too_large"' in answer


def test_a_header_under_the_limit_is_served(gw: GatewayThread) -> None:
    answer = httpx.get(gw.url + "/health", headers={"X-Big": "a" * 30_000}, timeout=30)
    assert answer.status_code == 200


def test_a_long_request_target_counts_too(gw: GatewayThread) -> None:
    answer = httpx.get(gw.url + "/health?q=" + "a" * 40_000, timeout=30)
    assert answer.status_code == 431


def test_beyond_max_connections_the_oldest_idle_one_is_closed(capped: GatewayThread) -> None:
    silent = [_connect(capped.url) for _ in range(3 * CAP)]
    try:
        for _ in range(5):  # each on a new connection, after the silent ones
            assert httpx.get(capped.url + "/health", timeout=30).status_code == 200
        still_open = [s for s in silent if _is_open(s)]
        assert 0 < len(still_open) < CAP
        assert not _is_open(silent[0])  # the oldest went first
    finally:
        for sock in silent:
            sock.close()


def test_upgrade_requests_are_answered_as_http_and_do_not_use_up_the_cap(capped: GatewayThread) -> None:
    # a WebSocket handshake used to leave the connection count one higher each time (uvicorn hands the
    # connection to another protocol); the gateway serves no WebSocket, so it is answered as HTTP
    upgrade = (
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    for _ in range(3 * CAP):
        with _connect(capped.url) as sock:
            sock.sendall(upgrade)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert httpx.get(capped.url + "/health", timeout=30).status_code == 200


# -- with TLS ------------------------------------------------------------------------------------


def test_with_tls_a_silent_connection_and_a_half_sent_header_are_closed(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path)  # its own CA: the client trusts it as its CA file
    gateway = GatewaySpec(auth=False, header_timeout_s=0.5, tls_cert=cert, tls_key=key)
    with GatewayThread([fake_engine_config("tiny")], tmp_path, gateway=gateway) as gw:
        assert gw.url.startswith("https://")
        with _connect(gw.url) as sock:  # no ClientHello: the handshake timeout is the header timeout
            assert _read_all(sock) == b""  # not the event loop's 60 s: the socket's 30 s would fail first
        context = ssl.create_default_context(cafile=cert)
        with _connect(gw.url) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            answer = b""
            try:
                while chunk := tls.recv(65536):
                    answer += chunk
            except ssl.SSLError:  # the server closed without close_notify
                pass
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert httpx.get(gw.url + "/health", verify=context, timeout=30).status_code == 200


# -- more half-open connections than the process may open descriptors -----------------------------

FD_LIMIT = 256


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_half_open_connections_beyond_the_fd_limit_do_not_starve_a_normal_client(tmp_path: Path) -> None:
    gateway = GatewaySpec(auth=False, header_timeout_s=120)  # the cap does it here, not the timeout
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-c", LAUNCH, gateway.model_dump_json(), "", str(port), str(tmp_path)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=_limit_fds)
    half_open: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("LISTENING "), f"the gateway did not start: {line!r}"
        url = line.split()[1]
        fds = Path(f"/proc/{proc.pid}/fd")
        most_fds = 0
        served = []
        for _ in range(8):  # 400 half-open connections, 50 at a time, a normal request after each 50
            for _ in range(50):
                sock = _connect(url)
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                half_open.append(sock)
            served.append(httpx.get(url + "/v1/models", timeout=30).status_code)
            most_fds = max(most_fds, len(list(fds.iterdir())))
        assert served == [200] * 8
        assert proc.poll() is None
        assert most_fds < FD_LIMIT
        assert sum(_is_open(s) for s in half_open) < FD_LIMIT
    finally:
        for sock in half_open:
            sock.close()
        proc.terminate()
        proc.wait(60)


# -- the default cap -------------------------------------------------------------------------------


def test_the_default_cap_leaves_room_for_a_connection_to_an_engine_per_request() -> None:
    assert default_max_connections(256) == (256 - RESERVED_FDS) // 2
    assert default_max_connections(1024) == (1024 - RESERVED_FDS) // 2
    assert default_max_connections(1 << 20) == DEFAULT_MAX_CONNECTIONS


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    script = (
        "import resource; from airlock.serving.protocol import raise_fd_limit; "
        "print(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == ["1024", "1024"]
