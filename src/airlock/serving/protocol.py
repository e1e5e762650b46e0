"""uvicorn's httptools protocol with the guards a public port needs: a header timeout, a header size
cap and a cap on open connections.

uvicorn holds a connection that sends half a request header open for ever and accepts a header of any
size; so a client that opens connections and never finishes them exhausts the process's descriptors.
:class:`GuardedHttpProtocol` adds, per gateway process:

- **header timeout** (``gateway.header_timeout_s``): a request's header must be complete this long
  after the connection opens (first request) or after its first byte (later requests on a kept-alive
  connection; the idle time between requests is bounded by uvicorn's keep-alive timeout). Otherwise
  the connection is closed, with a 408 if part of a request had come. The same bounds the silence
  while the app waits for a request's body: a body that stops arriving closes the connection.
- **header size** (``gateway.max_header_bytes``): a request line and headers larger than this get 431
  and the connection is closed. Counted on the raw bytes while the header is unfinished (so one
  endless header line is cut off too) and exactly (request target + names + values) once it is
  complete.
- **pipelining**: a request whose header begins while the one before it is still being answered is
  judged only after that answer: a 431 for it follows the whole answer (nothing more is read
  meanwhile), and its header time starts when that answer is done, so neither guard writes into a
  response in flight. A pipelined request's body is never counted as the next request's header.
- **connections** (``gateway.max_connections``): at the cap, a new connection closes the oldest one
  that has no request in flight (still waiting for its header, or idle between kept-alive requests:
  what nginx calls reusable connections); if every connection has a request in flight, the new one
  is closed at once. Either way the listening socket keeps being drained and the descriptors in use
  stay bounded, while a client that sends its request at once still gets served.
- **the client leaving** (``gateway.asgi.DisconnectWatch``): a request awaiting its engine inside
  ``gateway.asgi.until_disconnect`` is registered with its connection, which cancels its task when
  the connection is lost before the response is complete; the gateway answers that as 499 and closes
  the engine's request. No watcher task per request, as without this protocol.

The default cap is half the descriptors the process may open (the soft ``RLIMIT_NOFILE``, first
raised to the hard limit, as Go's runtime does), less a reserve for the engines, the key database
and the logs, and at most :data:`DEFAULT_MAX_CONNECTIONS`: each request in flight also holds a
connection to its engine.

With TLS, the event loop calls ``connection_made`` only once the handshake is done: a connection is
counted and timed from then on. Before that it is not counted; ``GatewayServer`` sets the event loop's
handshake timeout (60 s by default) to the header timeout, so that it is bounded as long.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from airlock.gateway.asgi import DISCONNECT_WATCH
from airlock.serving.corked import CorkedTransport

log = logging.getLogger("airlock.serving")

#: the most client connections one gateway process holds by default
DEFAULT_MAX_CONNECTIONS = 4096
#: descriptors kept for what is not a client connection: the listening socket, engines' pipes, the key
#: database, the audit and engine logs, metrics files
RESERVED_FDS = 64
#: how long a refused request's remaining bytes are read and dropped before the connection is closed
LINGER_S = 2.0


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    max_header_bytes: int
    max_connections: int


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (as far as the kernel lets us); the new soft
    limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def default_max_connections(fd_limit: int) -> int:
    return max(8, min(DEFAULT_MAX_CONNECTIONS, (fd_limit - RESERVED_FDS) // 2))


class _TooLarge(Exception):
    pass


class ConnectionGuard:
    """What the connections of one server share: how many are open, and which have no request in
    flight, oldest first (a dict keeps insertion order; moving one to the end is pop + insert)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open = 0
        self.idle: dict[GuardedHttpProtocol, None] = {}
        self.shed = 0  # connections closed to make room (for tests and logs)
        self.refused = 0

    def make_room(self) -> bool:
        """Below the cap, or made room by closing the oldest idle connection."""
        if self.open < self.limits.max_connections:
            return True
        if not self.idle:
            self.refused += 1
            return False
        victim = next(iter(self.idle))
        victim.close_idle()
        self.shed += 1
        return True


class ClientWatch:
    """One connection's :class:`airlock.gateway.asgi.DisconnectWatch`: the tasks awaiting an engine for
    its requests (``gateway.asgi.until_disconnect``), each with its request's cycle, cancelled if the
    connection is lost before that response is complete.

    The protocol and each request's cycle hold it; it holds neither (a task and its cycle only while
    watched), so that no reference cycle keeps a closed connection for the garbage collector."""

    __slots__ = ("cancelled", "lost", "watched")

    def __init__(self) -> None:
        self.watched: dict[asyncio.Task[Any], RequestResponseCycle] = {}
        self.cancelled: set[asyncio.Task[Any]] = set()  # cut by cut(), until unwatched
        self.lost = False  # the connection is gone

    def watch_disconnect(self, task: asyncio.Task[Any], cycle: Any) -> bool:
        """Cancel ``task`` if the connection is lost before ``cycle``'s response is complete; False
        (nothing watched) if it is lost already."""
        if self.lost:
            if cycle.response_complete:
                return True  # answered already: nothing to watch
            cycle.disconnected = True  # (uvicorn marks only the latest cycle; see cut)
            return False
        self.watched[task] = cycle
        return True

    def unwatch_disconnect(self, task: asyncio.Task[Any]) -> bool:
        """Stop watching ``task``; True if it was cancelled because the connection was lost (the
        caller takes that cancellation back)."""
        self.watched.pop(task, None)
        if self.cancelled and task in self.cancelled:
            self.cancelled.discard(task)
            return True
        return False

    def cut(self) -> None:
        """The connection was lost: cancel the tasks whose responses are not complete."""
        for task, cycle in list(self.watched.items()):
            if cycle.response_complete or task.done():
                continue  # answered in full: the client left after its answer
            del self.watched[task]
            # uvicorn marks only the connection's latest cycle; one answered while a pipelined request
            # waits is marked too, so that its send stays silent as for any client gone
            cycle.disconnected = True
            self.cancelled.add(task)
            task.cancel()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's :class:`HttpToolsProtocol` with the guards of this module's docstring; one subclass
    per server, made by :func:`guarded_protocol`, carries that server's :class:`ConnectionGuard`."""

    guard: ClassVar[ConnectionGuard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._counted = False
        self._timer: asyncio.TimerHandle | None = None
        #: when the header now awaited began (the connection, or a kept-alive request's first byte);
        #: None while none is awaited: a request in flight, or idle between kept-alive requests
        self._header_since: float | None = None
        self._header_bytes = 0  # raw bytes of the unfinished header, before the chunk being parsed
        self._chunk = 0  # the size of the chunk being parsed
        self._last_read = 0.0  # when the last bytes came (for a request body that stops arriving)
        self._too_large = False
        self._discarding = False
        self._begun = False  # the awaited request's first byte has come
        self._begun_in_chunk = False  # a later request's header began inside the chunk being parsed
        self._refuse_when_done = False  # a 431 waits for the responses before it
        self.watch = ClientWatch()

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        guard = self.guard
        if not guard.make_room():
            self.transport = transport
            transport.close()  # every connection has a request in flight: this one waits no more
            return
        guard.open += 1
        self._counted = True
        guard.idle[self] = None
        # a response's head goes out with its body in one write (serving/corked.py)
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]
        self._header_since = self.loop.time()
        # one timer per connection, re-armed by itself: nothing to arm or cancel per request
        self._timer = self.loop.call_later(guard.limits.header_timeout_s, self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self.watch.lost = True
        if self.flow is None:  # refused in connection_made: uvicorn never saw it
            return
        super().connection_lost(exc)
        if self.watch.watched:
            # a turn later, as a watcher task woken by uvicorn's http.disconnect used to: a stream that
            # reset its stalled client itself (gateway.asgi.BoundedSend) ends as ClientStalled first
            self.loop.call_soon(self.watch.cut)

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.guard.open -= 1
        self.guard.idle.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close_idle(self) -> None:
        """Closed to make room for a new connection (no request of ours is in flight)."""
        self._release()
        if not self.transport.is_closing():
            self.transport.close()

    # -- reading ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, with the header counted and a 431 for one too large
        if self._discarding:
            return
        self._unset_keepalive_if_required()
        self._chunk = len(data)
        self._begun_in_chunk = False
        self._last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # the server runs without WebSockets (ws="none"): the request was answered as plain HTTP;
            # uvicorn would log two warnings for each such request
            return
        except httptools.HttpParserError:
            if self._too_large:
                self._refuse_header_too_large()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._header_since is not None and not self._begun_in_chunk:
            # the header is unfinished and began before this chunk: all of this chunk was header. One
            # that began inside it (after a pipelined request's body) is counted from the next chunk
            # on, and exactly once complete: a chunk is at most one read (256 KiB)
            self._header_bytes += len(data)
            if self._header_bytes > self.guard.limits.max_header_bytes:
                self._refuse_header_too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun = True
        if self._header_since is None:  # a later request on a kept-alive connection
            self._header_since = self.loop.time()
            self._begun_in_chunk = True

    def on_headers_complete(self) -> None:
        limit = self.guard.limits.max_header_bytes
        if self._header_bytes + self._chunk > limit:  # else the header cannot be larger: not counted
            size = len(self.url)
            for name, value in self.headers:
                size += len(name) + len(value)
            if size > limit:
                self._too_large = True
                raise _TooLarge  # stops the parser; data_received answers 431
        self._header_since = None
        self._header_bytes = 0
        self._begun = False
        self.guard.idle.pop(self, None)
        super().on_headers_complete()
        # the request's cycle knows its connection: gateway.asgi.until_disconnect asks it to watch
        setattr(self.cycle, DISCONNECT_WATCH, self.watch)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._counted and not self.pipeline and not self.transport.is_closing():
            if self._refuse_when_done:
                self._refuse_header_too_large()
                return
            if self._header_since is not None:
                # the next request began while this one was answered: its time starts now
                self._header_since = self.loop.time()
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = self.loop.call_later(self.guard.limits.header_timeout_s, self._check)
                return
            self.guard.idle[self] = None  # kept alive, waiting for the next request

    def _answering(self) -> bool:
        """A response is being sent (or pipelined requests wait for theirs): nothing may be written
        into it."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    # -- refusing --------------------------------------------------------------------------------

    def _check(self) -> None:
        """The connection's timer: a header unfinished after the timeout gets 408 (or, if nothing of it
        came, a close); a request body that the app waits for and nothing of which came for as long
        gets a close (the app sees the client gone)."""
        self._timer = None
        if self.transport.is_closing():
            return
        timeout = self.guard.limits.header_timeout_s
        now = self.loop.time()
        if self._header_since is not None:
            left = self._header_since + timeout - now
            if left <= 0 and self._answering():
                # the next request began early (pipelined): a 408 now would land inside this
                # response; its time starts when this response is done (on_response_complete)
                left = timeout
            elif left <= 0:
                if self._begun:
                    # all it sent has been read: closing cannot reset what it has not read yet
                    self._answer(
                        408, "the request header did not arrive in time", "request_timeout", linger=False
                    )
                else:
                    self.transport.close()
                return
            timeout = left
        elif self._awaiting_body():
            left = self._last_read + timeout - now
            if left <= 0:
                self.transport.close()
                return
            timeout = left
        self._timer = self.loop.call_later(timeout, self._check)

    def _awaiting_body(self) -> bool:
        cycle = self.cycle
        return (
            cycle is not None
            and cycle.more_body
            and not cycle.response_complete
            and not cycle.waiting_for_100_continue  # the client waits for us
            and not self.flow.read_paused  # paused by the app itself (its buffer is full): not the client
        )

    def _refuse_header_too_large(self) -> None:
        if self._answering():
            # pipelined behind a request not yet answered: the 431 follows that answer (read no more)
            self._refuse_when_done = True
            self._discarding = True
            self.flow.pause_reading()
            return
        self._refuse_when_done = False
        limit = self.guard.limits.max_header_bytes
        self._answer(
            431,
            f"the request line and headers are larger than this gateway's limit of {limit} bytes",
            "request_header_fields_too_large",
        )

    def _answer(self, status: int, message: str, code: str, *, linger: bool = True) -> None:
        """An OpenAI-style error, then the connection closed (the rest of the request is not read)."""
        body = orjson.dumps(
            {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
        )
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not linger or not self.transport.can_write_eof():  # TLS cannot half-close
            self.transport.close()
            return
        # a lingering close: the client may still be sending what we refuse; closing with its bytes
        # unread would reset the connection, and the client might never read our answer
        self.transport.write_eof()
        self._discarding = True
        self.guard.idle[self] = None  # the first to go if room is needed
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpProtocol]:
    """A protocol class for one server, with its own count of connections."""
    return type("GatewayHttpProtocol", (GuardedHttpProtocol,), {"guard": ConnectionGuard(limits)})
