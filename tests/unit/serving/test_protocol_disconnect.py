"""The client leaving, told by the connection (airlock.serving.protocol.GuardedHttpProtocol) rather than
by a watcher task per request: ``gateway.asgi.until_disconnect`` under uvicorn as airlock runs it.

These fail if a uvicorn upgrade breaks the hook (``receive`` no longer a method of the cycle that
``on_headers_complete`` made, ``connection_lost`` no longer called, the cycle's ``response_complete``
or ``disconnected`` gone): the watcher task the gateway falls back to elsewhere is made to fail here,
so that the fallback cannot hide it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from airlock.gateway import asgi
from airlock.gateway.apikeys import KeyLimits, KeyStore
from airlock.gateway.asgi import (
    BoundedSend,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    connection_abort,
    disconnect_watch,
    until_disconnect,
)
from airlock.gateway.auth import KeyCache
from airlock.serving.http import GatewayServer, uvicorn_config
from airlock.spec import GatewaySpec
from harness import GatewayThread, fake_engine_config


@dataclass
class Seen:
    """What the app saw of one request."""

    path: str
    hooked: bool = False
    outcome: str = ""  # "ok", the exception's class name
    cancelling: int = -1  # the task's pending cancellations once until_disconnect was left
    watched_after: int = -1  # tasks its connection still watched then
    entering: threading.Event = field(default_factory=threading.Event)  # its body read
    waiting: threading.Event = field(default_factory=threading.Event)  # its work began
    done: threading.Event = field(default_factory=threading.Event)
    cycle: weakref.ref[Any] | None = None  # uvicorn's request cycle, while it lives


class App:
    """An ASGI app whose routes each await something inside until_disconnect."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.loop = asyncio.get_running_loop()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        seen = Seen(scope["path"])
        self.seen.append(seen)
        while (await receive()).get("more_body"):
            pass
        seen.cycle = weakref.ref(receive.__self__)  # type: ignore[attr-defined]
        seen.entering.set()
        if scope["path"] == "/late":  # the client leaves meanwhile (it closes once this is set)
            for _ in range(1000):  # bounded: 10 s
                if self._lost(receive):
                    break
                await asyncio.sleep(0.01)
        watch = disconnect_watch(receive)
        seen.hooked = watch is not None
        task = asyncio.current_task()
        assert task is not None
        try:
            await until_disconnect(receive, self._work(scope["path"], seen, send, task))
            seen.outcome = "ok"
        except (ClientDisconnected, asyncio.CancelledError) as exc:
            seen.outcome = type(exc).__name__
        finally:
            seen.cancelling = task.cancelling()
            if watch is not None:
                seen.watched_after = len(watch[0].watched)  # type: ignore[attr-defined]
            seen.done.set()
        if seen.outcome == "ok" and scope["path"] != "/stall":
            body = b"done"
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % len(body))]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _lost(receive: Receive) -> bool:
        watch = disconnect_watch(receive)
        return watch is not None and bool(watch[0].lost)  # type: ignore[attr-defined]

    async def _work(self, path: str, seen: Seen, send: Send, task: asyncio.Task[Any]) -> None:
        seen.waiting.set()
        if path == "/quick":
            await asyncio.sleep(0.01)
        elif path == "/hang":
            await asyncio.sleep(30)
        elif path == "/shutdown":  # the server's shutdown cuts it (uvicorn cancels the request's task)
            asyncio.get_running_loop().call_later(0.05, task.cancel)
            await asyncio.sleep(30)
        elif path == "/stall":  # a stream whose client reads nothing: BoundedSend resets it
            bounded = BoundedSend(send, 0.3, connection_abort(send))
            try:
                await bounded({"type": "http.response.start", "status": 200, "headers": []})
                for _ in range(100_000):
                    await bounded({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
            finally:
                bounded.close()


@pytest.fixture
def no_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher task (the fallback where the connection cannot watch) must not be used."""

    def fail(receive: Receive, work: Awaitable[Any], current: asyncio.Task[Any]) -> Awaitable[Any]:
        raise AssertionError("until_disconnect fell back to a watcher task under GuardedHttpProtocol")

    monkeypatch.setattr(asgi, "_until_disconnect_watcher", fail)


@contextlib.contextmanager
def serve(app: App) -> Iterator[tuple[str, int]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn_config(app, None, GatewaySpec(auth=False, shutdown_grace_s=1.0))
    server = GatewayServer(config)
    loop = uvloop.new_event_loop()
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(server.serve(sockets=[sock])), daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        assert isinstance(server.servers, list)
        host, port = sock.getsockname()
        yield host, port
    finally:
        loop.call_soon_threadsafe(server.ask_exit)
        thread.join(10)
        loop.close()
        sock.close()


def _request(path: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode()


def _connect(address: tuple[str, int], rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(address)
    sock.settimeout(10)
    return sock


def _wait(event: threading.Event, what: str) -> None:
    assert event.wait(10), what


def test_the_connection_is_what_watches_under_guarded_protocol(no_watcher: None) -> None:
    app = App()
    with serve(app) as address, _connect(address) as sock:
        sock.sendall(_request("/quick"))
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.sendall(_request("/quick"))  # the next request on the kept-alive connection too
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert [(s.hooked, s.outcome, s.cancelling, s.watched_after) for s in app.seen] == [
        (True, "ok", 0, 0)
    ] * 2


def test_a_closed_connection_is_freed_without_the_garbage_collector(no_watcher: None) -> None:
    # the connection's watch is held by each request's cycle, and holds neither: no reference cycle
    # keeps a closed connection (and its last request) until a collection
    app = App()
    gc.disable()
    try:
        with serve(app) as address:
            with _connect(address) as sock:
                sock.sendall(_request("/quick"))
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            cycle = _first(app).cycle
            assert cycle is not None
            deadline = time.monotonic() + 5
            while cycle() is not None:
                assert time.monotonic() < deadline, "the closed connection is only freed by a collection"
                time.sleep(0.02)
    finally:
        gc.enable()


def test_a_client_that_leaves_cancels_its_request(no_watcher: None) -> None:
    app = App()
    with serve(app) as address:
        sock = _connect(address)
        sock.sendall(_request("/hang"))
        _wait(_first(app).waiting, "the request began")
        began = time.monotonic()
        sock.close()
        _wait(app.seen[0].done, "the request was cancelled when its client left")
        took = time.monotonic() - began
    seen = app.seen[0]
    assert (seen.hooked, seen.outcome, seen.cancelling, seen.watched_after) == (
        True,
        "ClientDisconnected",
        0,
        0,
    )
    assert took < 2


def test_a_client_that_left_before_the_work_began_is_not_served(no_watcher: None) -> None:
    # the connection is already gone when until_disconnect is entered: the work is never started
    app = App()
    with serve(app) as address:
        sock = _connect(address)
        sock.sendall(_request("/late"))
        _wait(_first(app).entering, "the request was read")
        sock.close()
        _wait(app.seen[0].done, "the request ended")
    seen = app.seen[0]
    assert (seen.hooked, seen.outcome, seen.cancelling, seen.watched_after) == (
        True,
        "ClientDisconnected",
        0,
        0,
    )
    assert not seen.waiting.is_set(), "the work began for a client already gone"


def _first(app: App) -> Seen:
    deadline = time.monotonic() + 10
    while not app.seen:
        assert time.monotonic() < deadline, "no request reached the app"
        time.sleep(0.01)
    return app.seen[0]


def test_a_cancellation_that_is_not_the_client_leaving_goes_on(no_watcher: None) -> None:
    # the server's shutdown (past its grace) cancels requests: that is no 499
    app = App()
    with serve(app) as address, _connect(address) as sock:
        sock.sendall(_request("/shutdown"))
        _wait(_first(app).done, "the request was cancelled")
    seen = app.seen[0]
    assert (seen.hooked, seen.outcome, seen.cancelling, seen.watched_after) == (True, "CancelledError", 1, 0)


def test_a_stalled_stream_stays_a_stall(no_watcher: None) -> None:
    # BoundedSend resets the connection itself; the connection then sees itself lost: the request ends
    # as ClientStalled (counted as a send timeout), and no cancellation is left pending on its task
    app = App()
    with serve(app) as address, _connect(address, rcvbuf=4096) as sock:
        sock.sendall(_request("/stall"))
        _wait(_first(app).done, "the stalled stream was dropped")
    seen = app.seen[0]
    assert (seen.hooked, seen.outcome, seen.cancelling, seen.watched_after) == (True, "ClientStalled", 0, 0)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_request_answered_while_another_is_pipelined_is_cancelled_too(no_watcher: None) -> None:
    # uvicorn tells only the connection's latest request (the pipelined one, not started) that the
    # client left; the connection cancels the one it is answering, which ends quietly (no error logged)
    app = App()
    handler = _Errors()
    logger = logging.getLogger("uvicorn.error")
    with serve(app) as address:
        logger.addHandler(handler)  # once uvicorn has configured its loggers (which drops handlers)
        try:
            sock = _connect(address)
            sock.sendall(_request("/hang") + _request("/quick"))
            _wait(_first(app).waiting, "the first request began")
            time.sleep(0.1)  # the second is read and queued behind it
            sock.close()
            _wait(app.seen[0].done, "the request in progress was cancelled")
            time.sleep(0.1)
        finally:
            logger.removeHandler(handler)
    assert [(s.path, s.outcome, s.cancelling) for s in app.seen] == [("/hang", "ClientDisconnected", 0)]
    assert not handler.records, [r.getMessage() for r in handler.records]


# -- through the gateway ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayThread, str, Path]]:
    store = KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")
    token = store.create("one-at-a-time", scopes=["chat"], limits=KeyLimits(concurrency=1))[1]
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    gateway = GatewaySpec(audit_log=audit, metrics_auth=False)
    with GatewayThread(
        [fake_engine_config("tiny")], tmp_path_factory.mktemp("logs"), gateway=gateway,
        keys=KeyCache(store, refresh_s=0.1),
    ) as thread:  # fmt: skip
        yield thread, token, audit


def _chat(url: str, token: str, prompt: str, *, stream: bool) -> bytes:
    body = json.dumps(
        {"model": "tiny", "messages": [{"role": "user", "content": prompt}], "stream": stream}
    ).encode()
    host = url.removeprefix("http://")
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _audited(audit: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
        chat = [r for r in records if r.get("route") == "/v1/chat/completions"]
        if len(chat) >= count:
            return chat
        assert time.monotonic() < deadline, records
        time.sleep(0.05)


@pytest.mark.parametrize(("prompt", "stream"), [("please wait", False), ("please hang", True)])
def test_a_gateway_request_whose_client_left_is_a_499_and_frees_its_slot(
    gateway: tuple[GatewayThread, str, Path], prompt: str, stream: bool, no_watcher: None
) -> None:
    thread, token, audit = gateway
    engine = httpx.Client(base_url=thread.supervisor.engines["tiny"].config.base_url)
    before = engine.get("/stats").json()
    audited = len(_audited(audit, 0))
    host, port = thread.url.removeprefix("http://").split(":")
    sock = _connect((host, int(port)))
    sock.sendall(_chat(thread.url, token, prompt, stream=stream))
    deadline = time.monotonic() + 10
    while engine.get("/stats").json()["requests"] == before["requests"]:
        assert time.monotonic() < deadline, "the request did not reach the engine"
        time.sleep(0.02)
    if stream:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.close()
    record = _audited(audit, audited + 1)[-1]
    assert record["status"] == 499
    deadline = time.monotonic() + 10
    while engine.get("/stats").json()["cancelled"] == before["cancelled"]:
        assert time.monotonic() < deadline, "the engine's request was not closed"
        time.sleep(0.02)
    # the key's one slot is free again: the next request is served, not refused (429)
    answer = httpx.post(
        thread.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    metrics = httpx.get(thread.url + "/metrics").text
    assert 'airlock_requests_in_flight{route="/v1/chat/completions"} 0.0' in metrics
    # the audit writes in batches: wait for this last line too, so that the next test counts from
    # after it (else it could take this 200 for its own request's line)
    assert _audited(audit, audited + 2)[-1]["status"] == 200
