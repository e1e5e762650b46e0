"""The SQLite state's generation check: read once for the requests of one turn of the event loop
that were read before it, and never for a request read after a key was revoked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from airlock.gateway.apikeys import KeyStore
from airlock.gateway.auth import KeyCache
from airlock.gateway.errors import APIError
from airlock.gateway.state import SqliteState

Runner = Callable[[Coroutine[Any, Any, None]], None]
RUNNERS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.mark.parametrize("runner", RUNNERS.values(), ids=RUNNERS.keys())
def test_one_read_of_the_generation_serves_the_rest_of_its_turn(tmp_path: Path, runner: Runner) -> None:
    store = KeyStore(tmp_path / "keys.db")

    async def scenario() -> None:
        state = SqliteState(tmp_path / "keys.db")
        before = await state.generation()
        store.create("new")  # another connection commits
        assert await state.generation() == before  # the same turn: the read above still answers
        await asyncio.sleep(0)
        assert await state.generation() == before + 1
        await state.close()

    runner(scenario())


@pytest.mark.parametrize("runner", RUNNERS.values(), ids=RUNNERS.keys())
def test_a_request_read_after_a_revocation_is_refused_even_in_the_same_turn(
    tmp_path: Path, runner: Runner
) -> None:
    store = KeyStore(tmp_path / "keys.db")
    _, token = store.create("soon-gone")
    header = f"Bearer {token}".encode()

    async def scenario() -> None:
        cache = KeyCache(store)
        await cache.open()
        await cache.authenticate(header)
        await cache.authenticate(header)  # the generation was read in this turn
        store.revoke("soon-gone")
        # A request read now is a task created now, whose first step runs after the check is let go.
        later = asyncio.get_running_loop().create_task(cache.authenticate(header))
        with pytest.raises(APIError) as info:
            await later
        assert (info.value.status, info.value.code) == (401, "invalid_api_key")
        await cache.close()

    runner(scenario())


def test_with_an_eager_task_factory_every_request_reads_the_generation(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def scenario() -> None:
        asyncio.get_running_loop().set_task_factory(factory)  # e.g. asyncio.eager_task_factory
        state = SqliteState(tmp_path / "keys.db")
        before = await state.generation()
        store.create("new")
        assert await state.generation() == before + 1
        await state.close()

    asyncio.run(scenario())
