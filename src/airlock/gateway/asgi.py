"""The few ASGI pieces the gateway needs, written out because it sits in every request's path.

benchmarks/http_stack.py measured, on this 2-core machine through a JSON pass-through: raw ASGI on
uvicorn (httptools, uvloop) with an aiohttp client ~2,300 req/s at 1 client and ~2,600 at 32;
Starlette on the same server ~1,550 / ~2,000; aiohttp.web ~1,800 / ~1,950; Starlette with httpx
~150 / ~90. Hence plain ASGI callables here and uvicorn to serve them. The client to the engines
was aiohttp's until its share of the CPU (a third, by py-spy, with everything on) led to
``engine_client.py``, which costs about half as much per request (345 -> 222 us at 32 clients).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, MutableMapping
from typing import Any, Protocol, TypeVar

import orjson

from airlock.gateway.errors import APIError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

T = TypeVar("T")

JSON = b"application/json"


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, or APIError(413) as soon as it passes ``limit`` bytes."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(
            413,
            f"the request body ({int(declared)} bytes) is larger than this gateway's limit of {limit} bytes",
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise APIError(413, f"the request body is larger than this gateway's limit of {limit} bytes")
        chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, data: object, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    await send_bytes(send, status, orjson.dumps(data), JSON, headers)


class ClientDisconnected(Exception):
    """The client went away before the response was complete."""


class ClientStalled(ClientDisconnected):
    """The client read nothing for the send timeout; its connection was reset."""


def connection_abort(send: Send) -> Callable[[], None] | None:
    """A way to reset the connection under ``send`` at once, without flushing what it buffered.

    uvicorn's ``send`` is a method of its request cycle, which holds the connection's transport;
    closing it (all ASGI offers) would wait for a client that reads nothing to read the buffer, and
    hold its socket until then. None where the server is not uvicorn (tests on the bare app).
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    return abort if callable(abort) else None


class BoundedSend:
    """``send`` whose every write may wait at most ``timeout_s`` for the client to read; past that the
    connection is reset (``abort``) and the write raises ClientStalled. Call :meth:`close` when done.

    uvicorn's ``send`` waits while the connection's write buffer is above its high-water mark, that
    is for as long as a client that stopped reading lets it; that wait is the one bounded here. One
    timer per stream looks at the write in progress (``asyncio.timeout`` around each write cost
    ~6 us a token, this ~0.3 us): it wakes every ``timeout_s`` while writes go through.
    """

    def __init__(self, send: Send, timeout_s: float, abort: Callable[[], None] | None) -> None:
        self._send = send
        self.timeout_s = timeout_s
        self._abort = abort
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._since: float | None = None  # when the write in progress began
        self._fired = False
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(timeout_s, self._check)

    async def __call__(self, message: Message) -> None:
        self._since = self._loop.time()
        try:
            await self._send(message)
        except asyncio.CancelledError:
            if not self._fired:
                raise
            if self._task is not None:
                self._task.uncancel()
            if self._abort is not None:
                self._abort()
                await asyncio.sleep(0)  # let the server see the connection gone before the app returns
            raise ClientStalled(f"the client read nothing for {self.timeout_s:g} s") from None
        finally:
            self._since = None

    def _check(self) -> None:
        self._timer = None
        since = self._since
        now = self._loop.time()
        if since is not None and now - since >= self.timeout_s and self._task is not None:
            self._fired = True
            self._task.cancel()  # the task waits in this write (since is set only while it does)
            return
        delay = self.timeout_s if since is None else since + self.timeout_s - now
        self._timer = self._loop.call_later(delay, self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class DisconnectWatch(Protocol):
    """What a server's connection offers so that :func:`until_disconnect` needs no watcher task: it
    cancels a watched task once the connection is lost before that task's response was complete.
    airlock.serving.protocol.GuardedHttpProtocol is one."""

    def watch_disconnect(self, task: asyncio.Task[Any], cycle: Any) -> bool:
        """Watch ``task`` (answering the request of ``cycle``); False if the connection is gone."""

    def unwatch_disconnect(self, task: asyncio.Task[Any]) -> bool:
        """Stop watching ``task``; True if it was cancelled because the connection was lost."""


#: the attribute of a server's request object (uvicorn's cycle: ``receive.__self__``) that holds its
#: connection when that is a :class:`DisconnectWatch`; set by airlock.serving.protocol per request
DISCONNECT_WATCH = "airlock_disconnect_watch"


def disconnect_watch(receive: Receive) -> tuple[DisconnectWatch, Any] | None:
    """The connection under ``receive`` if it watches for the client leaving, with the request.

    uvicorn's ``receive`` is a method of its request cycle, on which our protocol puts itself. None
    elsewhere (another server, the bare app)."""
    cycle = getattr(receive, "__self__", None)
    connection: DisconnectWatch | None = getattr(cycle, DISCONNECT_WATCH, None)
    return None if connection is None else (connection, cycle)


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any], gone: list[bool]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.append(True)
    task.cancel()


async def until_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (closing the upstream request) and raise
    ClientDisconnected.

    uvicorn's ``send`` returns silently once the client is gone, so the connection being lost is the
    only signal. Under our own protocol (:class:`DisconnectWatch`) the connection cancels the request's
    task itself when it is lost: nothing more per request than an entry in a dict. Elsewhere one
    watcher task per request waits for ``http.disconnect`` from ``receive`` and cancels the request's
    own task; cheaper than running ``work`` in a task of its own and waiting on both.
    """
    current = asyncio.current_task()
    if current is None:  # not inside a task: nothing to cancel
        return await work
    watch = disconnect_watch(receive)
    if watch is None:
        return await _until_disconnect_watcher(receive, work, current)
    connection, cycle = watch
    if not connection.watch_disconnect(current, cycle):
        work.close()  # never started: the engine is not asked at all
        raise ClientDisconnected
    try:
        return await work
    except asyncio.CancelledError:
        if connection.unwatch_disconnect(current):
            current.uncancel()
            raise ClientDisconnected from None
        raise  # not ours: the server's shutdown cutting requests, or the caller's
    finally:
        # (a no-op after the branch above) cut as ``work`` ended otherwise, e.g. with ClientStalled:
        # the cancellation is ours, and taken back
        if connection.unwatch_disconnect(current):
            current.uncancel()


async def _until_disconnect_watcher(receive: Receive, work: Awaitable[T], current: asyncio.Task[Any]) -> T:
    gone: list[bool] = []
    watcher = asyncio.get_running_loop().create_task(_cancel_on_disconnect(receive, current, gone))
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            current.uncancel()
            raise ClientDisconnected from None
        raise
    finally:
        watcher.cancel()
