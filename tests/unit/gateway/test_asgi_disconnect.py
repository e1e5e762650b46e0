"""gateway.asgi.until_disconnect on its own: with a connection that watches (DisconnectWatch, as
airlock.serving.protocol's) and with the watcher task it falls back to elsewhere (another server, the
bare app under httpx's ASGITransport). Under uvicorn: tests/unit/serving/test_protocol_disconnect.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from airlock.gateway.asgi import (
    DISCONNECT_WATCH,
    ClientDisconnected,
    ClientStalled,
    Message,
    disconnect_watch,
    until_disconnect,
)


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """A plain test that runs the coroutine function ``test`` in an event loop of its own."""

    def run() -> None:
        asyncio.run(test())

    run.__name__ = test.__name__
    return run


class Connection:
    """A DisconnectWatch as the protocol is one: ``lose()`` cancels what it watches."""

    def __init__(self) -> None:
        self.watched: dict[asyncio.Task[Any], Cycle] = {}
        self.cut: set[asyncio.Task[Any]] = set()
        self.lost = False

    def watch_disconnect(self, task: asyncio.Task[Any], cycle: Any) -> bool:
        if self.lost:
            return False
        self.watched[task] = cycle
        return True

    def unwatch_disconnect(self, task: asyncio.Task[Any]) -> bool:
        self.watched.pop(task, None)
        if task in self.cut:
            self.cut.discard(task)
            return True
        return False

    def lose(self) -> None:
        self.lost = True
        for task in list(self.watched):
            del self.watched[task]
            self.cut.add(task)
            task.cancel()


class Cycle:
    """uvicorn's request cycle, as far as until_disconnect looks: ``receive`` is its method."""

    def __init__(self, connection: Connection | None) -> None:
        if connection is not None:
            setattr(self, DISCONNECT_WATCH, connection)
        self.received = 0

    async def receive(self) -> Message:
        self.received += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class Bare:
    """``receive`` of a server without the hook: http.disconnect once ``leave()`` is called."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def test_disconnect_watch_finds_the_connection_only_where_there_is_one() -> None:
    connection = Connection()
    cycle = Cycle(connection)
    assert disconnect_watch(cycle.receive) == (connection, cycle)
    assert disconnect_watch(Cycle(None).receive) is None
    assert disconnect_watch(Bare().receive) is None

    async def plain() -> Message:
        return {}

    assert disconnect_watch(plain) is None


@in_loop
async def test_the_connection_watches_and_nothing_is_left_behind() -> None:
    connection = Connection()
    cycle = Cycle(connection)
    tasks_before = len(asyncio.all_tasks())

    async def work() -> str:
        assert len(connection.watched) == 1
        assert len(asyncio.all_tasks()) == tasks_before, "a watcher task was made"
        await asyncio.sleep(0)
        return "answer"

    assert await until_disconnect(cycle.receive, work()) == "answer"
    assert connection.watched == {} and cycle.received == 0


@in_loop
async def test_a_lost_connection_is_client_disconnected_with_no_cancellation_left() -> None:
    connection = Connection()
    cycle = Cycle(connection)
    closed: list[bool] = []

    async def work() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            closed.append(True)  # the engine's request is closed as the cancellation passes

    async def request() -> int:
        task = asyncio.current_task()
        assert task is not None
        with pytest.raises(ClientDisconnected):
            await until_disconnect(cycle.receive, work())
        await asyncio.sleep(0)  # settle, metrics, audit still run: no cancellation pending
        return task.cancelling()

    task = asyncio.create_task(request())
    await asyncio.sleep(0.01)
    connection.lose()
    assert await task == 0
    assert closed == [True]
    assert connection.watched == {} and connection.cut == set()


@in_loop
async def test_a_connection_lost_before_the_work_begins_never_starts_it() -> None:
    connection = Connection()
    connection.lost = True
    began: list[bool] = []

    async def work() -> None:
        began.append(True)

    with pytest.raises(ClientDisconnected):
        await until_disconnect(Cycle(connection).receive, work())
    assert began == [] and connection.watched == {}


@in_loop
async def test_a_cancellation_not_from_the_connection_goes_on() -> None:
    # the server's shutdown cutting requests past its grace: CancelledError, which _http makes 503
    connection = Connection()

    async def request() -> None:
        await until_disconnect(Cycle(connection).receive, asyncio.sleep(3600))

    task = asyncio.create_task(request())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert connection.watched == {}


@in_loop
async def test_a_stall_that_ends_the_work_before_the_cut_stays_a_stall() -> None:
    # the work ends with its own error (ClientStalled) after the connection cancelled it: that error
    # goes on, and the connection's cancellation is taken back
    connection = Connection()

    async def work() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ClientStalled("stalled") from None

    async def request() -> int:
        task = asyncio.current_task()
        assert task is not None
        with pytest.raises(ClientStalled):
            await until_disconnect(Cycle(connection).receive, work())
        return task.cancelling()

    task = asyncio.create_task(request())
    await asyncio.sleep(0.01)
    connection.lose()
    assert await task == 0


@in_loop
async def test_without_the_hook_a_watcher_task_turns_http_disconnect_into_client_disconnected() -> None:
    bare = Bare()

    async def request() -> int:
        task = asyncio.current_task()
        assert task is not None
        with pytest.raises(ClientDisconnected):
            await until_disconnect(bare.receive, asyncio.sleep(3600))
        return task.cancelling()

    task = asyncio.create_task(request())
    await asyncio.sleep(0.01)
    bare.gone.set()
    assert await task == 0


@in_loop
async def test_without_the_hook_the_answer_comes_back_and_the_watcher_goes() -> None:
    bare = Bare()
    before = len(asyncio.all_tasks())

    async def work() -> str:
        await asyncio.sleep(0)
        return "answer"

    assert await until_disconnect(bare.receive, work()) == "answer"
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before
