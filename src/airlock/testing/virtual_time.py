"""An asyncio event loop on virtual time, so timing tests assert exact numbers instead of wall-clock bounds.

The loop's clock (``loop.time()``) starts at 0 and moves only when the loop has nothing to do but
wait for a timer: it then jumps straight to that timer. ``asyncio.sleep(0.2)`` takes no real time
and exactly 0.2 s of loop time, whatever the machine's load, so a test can pass ``loop.time`` as
the clock of the code under test and assert the timestamps it records.

This only holds while everything the loop waits for is on the loop itself: servers and clients
talking over Unix sockets (a write is readable by the peer as soon as ``send`` returns), no
threads, no child processes. If the loop has neither a ready socket nor a timer, it blocks on the
sockets for real, as any loop would.

    loop = VirtualTimeLoop()
    result = loop.run_until_complete(main(clock=loop.time))
    loop.close()
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that, instead of sleeping until a timer, moves the loop's clock to it."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:  # no timer at all: only a socket can wake the loop
            return super().select(None)
        assert self.loop is not None
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is virtual: it advances only to the next due timer."""

    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward to the next timer (``seconds`` from now, as the loop computed it)."""
        due = self._next_timer()
        self._virtual_now = due if due is not None else self._virtual_now + seconds

    def _next_timer(self) -> float | None:
        scheduled: list[Any] = getattr(self, "_scheduled", [])
        live = [handle.when() for handle in scheduled if not handle.cancelled()]
        return min(live) if live else None


def run_virtual(main: Awaitable[T]) -> T:
    """Run ``main`` to its end on a fresh :class:`VirtualTimeLoop`, then close the loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
