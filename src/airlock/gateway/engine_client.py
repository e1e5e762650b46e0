"""The gateway's HTTP/1.1 client to its engines: keep-alive connections, one write per request, the
response parsed by httptools (the C parser uvicorn uses), streamed bodies with back-pressure.

Why not aiohttp's client (which this replaced): it was a third of the gateway's CPU per request under
load (its request and response objects, header multidicts, timers, payload writers and cookie jar
are built for a general client); this one does what the gateway needs, on the event loop's own
protocol callbacks. Measured with ``benchmarks/gateway_overhead.py`` (see the commit that added
this file). The engines are trusted, on loopback or the site's network, and speak plain HTTP/1.1
with a Content-Length or chunked body (vLLM's uvicorn, llama-server's cpp-httplib), or https for a
``remote`` engine (verified against the system's CAs, as before).

Errors, each an :class:`EngineError`:

* :class:`EngineUnreachable`: no connection could be made (the engine is down): 503.
* :class:`EngineDisconnected`: the connection closed before the response began. On a reused
  keep-alive connection the engine had closed (llama-server closes after a stream without saying
  so), the request is sent once more on a new connection, but only when the close came within
  :data:`STALE_CLOSE_S` of the request: later, the engine may have worked on it, and a POST is not
  sent twice. Idle connections are kept ``keepalive_s`` (4 s: under uvicorn's and cpp-httplib's 5 s
  idle timeouts), so that race is rare.
* :class:`EngineBrokeOff`: the connection closed or the engine sent bad HTTP mid-response.
* :class:`EngineTimeout` (a TimeoutError): no byte for ``read_timeout_s`` while one was awaited.

A response not read to its end (the client left, the stream was cut) closes its connection, so that
the engine sees the close and stops generating.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import httptools

#: Buffered body bytes above which the engine's socket stops being read (the client reads slowly);
#: it is read again once the buffer was taken.
HIGH_WATER = 256 * 1024
#: A reused connection that closes this soon after the request was written had been closed by the
#: engine while idle (it never read the request): the request is sent again, once, on a new one.
#: Later than this, the engine may have worked on it, and a POST is not sent twice.
STALE_CLOSE_S = 0.1
#: The most bytes a response's status line and headers may take (an engine is not a header source).
MAX_HEAD = 64 * 1024


class EngineError(Exception):
    """The engine could not be asked or did not answer properly; the message says how."""


class EngineUnreachable(EngineError):
    pass


class EngineDisconnected(EngineError):
    pass


class EngineBrokeOff(EngineError):
    pass


class EngineTimeout(EngineError, TimeoutError):
    pass


@dataclass(frozen=True)
class Target:
    """Where one URL's requests go: the address (the pool's key), the path and the Host header."""

    host: str
    port: int
    tls: bool
    path: str
    host_header: str

    @property
    def pool_key(self) -> tuple[str, int, bool]:
        return self.host, self.port, self.tls


def parse_target(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EngineError(f"not an http(s) URL: {url}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    default = (tls and port == 443) or (not tls and port == 80)
    return Target(host, port, tls, path, shown if default else f"{shown}:{port}")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; the response in flight is parsed into its fields as bytes arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.used = 0  # requests sent on it
        self.idle_since = 0.0
        self.sent_at = 0.0
        self.spoiled = False  # bytes came that belong to no request: never reused
        # one parser for the connection's life: a connection is reused only after a whole response,
        # where the parser is ready for the next one
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: collections.deque[bytes] = collections.deque()
        self._reset()

    def _reset(self) -> None:
        self.began = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.close_delimited = False
        self.chunks.clear()
        self.buffered = 0
        self.received = 0
        self.error: EngineError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False  # (a paused socket holds unread bytes: it was never pooled)

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._break(EngineBrokeOff(f"malformed HTTP: {exc!r}"))
            return
        if not self.headers_done and self.received > MAX_HEAD:
            self._break(EngineBrokeOff(f"the response's headers passed {MAX_HEAD} bytes"))
            return
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.complete and self.error is None:
            if self.headers_done and self.close_delimited and exc is None:
                self.complete = True  # a body without length or chunks ends with the connection
            elif self.received == 0:
                self._fail(EngineDisconnected("connection closed before an answer"))
            else:
                how = f": {exc}" if exc else ""
                self._fail(EngineBrokeOff(f"connection closed mid-answer{how}"))
        self._wake()

    # -- httptools callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.began or self.used == 0:  # a second message for one request, or one for none
            self.spoiled = True
        self.began = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.spoiled:
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.spoiled:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # informational (103 Early Hints...): the answer is still to come
            self.headers = {}
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        headers = self.headers
        self.close_delimited = (
            "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower()
        )
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        if not self.spoiled:
            self.chunks.append(body)
            self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.spoiled:
            return
        if not self.headers_done:  # the end of an informational response
            self.began = False
            return
        self.complete = True

    # -- the request's side ----------------------------------------------------------------------------

    def _fail(self, error: EngineError) -> None:
        if self.error is None:
            self.error = error

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _break(self, error: EngineError) -> None:
        """Fail the request in flight with ``error`` and close the connection."""
        self._fail(error)
        self.close()
        self._wake()

    def _timed_out(self, seconds: float) -> None:
        if self.waiter is None or self.waiter.done():
            return  # the bytes came in the same turn: the waiting request goes on
        self._break(EngineTimeout(f"nothing for {seconds:g} s"))

    async def wait(self, timeout_s: float | None) -> None:
        """Until more bytes, the end, or an error have come (or ``timeout_s`` passed: an error)."""
        waiter = self.loop.create_future()
        self.waiter = waiter
        timer = None if timeout_s is None else self.loop.call_later(timeout_s, self._timed_out, timeout_s)
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        """Every body byte buffered so far; reading resumes when the buffer has drained."""
        chunks = self.chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.lost:
            self.paused = False
            self.transport.resume_reading()
        return data

    def send(self, head: bytes, body: bytes) -> None:
        if self.used:
            self._reset()
        self.used += 1
        self.sent_at = self.loop.time()
        assert self.transport is not None
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.lost = True

    @property
    def reusable(self) -> bool:
        """Whole, kept alive by the engine, and nothing since that belongs to no request."""
        return self.complete and self.keep_alive and not (self.lost or self.spoiled or self.error)


class EngineResponse:
    """The status and headers of an engine's answer; its body read whole or as it comes."""

    __slots__ = ("_client", "_conn", "_released", "_target", "headers", "status")

    def __init__(self, client: EngineClient, target: Target, conn: _Connection) -> None:
        self._client = client
        self._target = target
        self._conn = conn
        self._released = False
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers  # names in lower case

    async def read(self) -> bytes:
        """The whole body."""
        parts: list[bytes] = []
        while (data := await self.chunk()) is not None:
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunk(self) -> bytes | None:
        """The body bytes that have arrived (waiting for some), in one piece; None at the end."""
        conn = self._conn
        while True:
            if conn.chunks:
                return conn.take()
            if conn.complete:
                return None
            if conn.error is not None:
                raise conn.error
            await conn.wait(self._client.read_timeout_s)

    @property
    def done(self) -> bool:
        """The whole body has arrived and been taken: :meth:`chunk` would return None."""
        return self._conn.complete and not self._conn.chunks

    def release(self) -> None:
        """Back to the pool when the answer was read to its end and the engine keeps the connection;
        closed otherwise."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.reusable and not conn.chunks:  # read to its end (a paused socket is not pooled)
            self._client._put(self._target, conn)
        else:
            conn.close()

    async def __aenter__(self) -> EngineResponse:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class EngineClient:
    """Pools of keep-alive connections, one per engine address; ``close`` ends them all. Idle ones
    older than ``keepalive_s`` are closed when met (the engines close theirs after 5 s)."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float | None = None,
        keepalive_s: float = 4.0,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keepalive_s = keepalive_s
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._targets: dict[str, Target] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    def target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            target = parse_target(url)
            if len(self._targets) > 1024:
                self._targets.clear()
            self._targets[url] = target
        return target

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> EngineResponse:
        """Send and wait for the status line and headers; the body is read from the response."""
        target = self.target(url)
        head = self._head(target, headers, len(body))
        for attempt in range(2):
            conn = self._take_idle(target) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(target)
            conn.send(head, body)
            try:
                while not conn.headers_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(self.read_timeout_s)
            except EngineDisconnected:
                conn.close()
                if reused and conn.loop.time() - conn.sent_at < STALE_CLOSE_S:
                    continue  # a keep-alive connection the engine had closed: it never read this
                raise
            except BaseException:
                conn.close()
                raise
            return EngineResponse(self, target, conn)
        raise EngineDisconnected("connection closed before an answer")

    @staticmethod
    def _head(target: Target, headers: Mapping[str, str], length: int) -> bytes:
        lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header}"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"the header {name!r} for the engine holds a line break")
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {length}\r\n\r\n")
        return "\r\n".join(lines).encode("latin-1")

    def _take_idle(self, target: Target) -> _Connection | None:
        idle = self._idle.get(target.pool_key)
        if not idle:
            return None
        deadline = time.monotonic() - self.keepalive_s
        while idle:
            conn = idle.pop()  # the most recent: the least likely to have been closed by the engine
            # anything the engine sent while idle (a 408, garbage) spoiled the connection
            if conn.reusable and conn.idle_since > deadline:
                return conn
            conn.close()
        return None

    def _put(self, target: Target, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        now = conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(target.pool_key, [])
        if idle and idle[0].idle_since < now - self.keepalive_s:  # the oldest first: drop the expired
            for old in [c for c in idle if c.lost or c.idle_since < now - self.keepalive_s]:
                old.close()
                idle.remove(old)
        idle.append(conn)

    async def _connect(self, target: Target) -> _Connection:
        if self._closed:
            raise EngineUnreachable("the gateway is shutting down")
        loop = asyncio.get_running_loop()
        conn = _Connection(loop)
        context = self._ssl_context() if target.tls else None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await loop.create_connection(
                    lambda: conn, target.host, target.port, ssl=context,
                    server_hostname=target.host if context is not None else None,
                )  # fmt: skip
        except TimeoutError as exc:
            raise EngineUnreachable(
                f"no connection to {target.host_header} within {self.connect_timeout_s:g} s"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise EngineUnreachable(f"cannot connect to {target.host_header}: {reason}") from exc
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def idle_connections(self) -> int:
        return sum(len(v) for v in self._idle.values())

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
