"""BoundedSend on virtual time: a write that waits past the timeout resets the connection and raises
ClientStalled at exactly the timeout; writes that wait less, however many, go through."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airlock.gateway.asgi import BoundedSend, ClientStalled
from airlock.testing.virtual_time import run_virtual

MESSAGE = {"type": "http.response.body", "body": b"data: x\n\n", "more_body": True}


class Client:
    """A connection whose writes wait ``waits[i]`` seconds each (None: forever)."""

    def __init__(self, waits: list[float | None]) -> None:
        self.waits = waits
        self.sent = 0
        self.aborted_at: float | None = None

    async def send(self, message: Any) -> None:
        wait = self.waits[self.sent]
        await (asyncio.sleep(wait) if wait is not None else asyncio.Event().wait())
        self.sent += 1

    def abort(self) -> None:
        self.aborted_at = asyncio.get_running_loop().time()


def test_a_write_waiting_past_the_timeout_resets_the_connection_at_the_timeout() -> None:
    client = Client([0.0, 4.0, 9.9, None])

    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        bounded = BoundedSend(client.send, 10.0, client.abort)
        await bounded(MESSAGE)
        await asyncio.sleep(25.0)  # idle between writes: nothing to time
        await bounded(MESSAGE)
        await bounded(MESSAGE)
        began = loop.time()
        with pytest.raises(ClientStalled):
            await bounded(MESSAGE)
        bounded.close()
        assert client.aborted_at is not None
        return client.sent, client.aborted_at - began

    sent, stalled_for = run_virtual(main())
    assert (sent, stalled_for) == (3, 10.0)


def test_a_cancel_from_elsewhere_is_not_taken_for_a_stall() -> None:
    client = Client([None])

    async def main() -> None:
        bounded = BoundedSend(client.send, 10.0, client.abort)
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(3.0, task.cancel)
        try:
            with pytest.raises(asyncio.CancelledError):
                await bounded(MESSAGE)
        finally:
            bounded.close()
        assert client.aborted_at is None

    async def outer() -> None:
        await asyncio.get_running_loop().create_task(main())

    run_virtual(outer())
