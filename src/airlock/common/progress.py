"""Progress reporting from the core without a UI: the CLI passes a :class:`ProgressSink` (rich bars),
tests pass nothing or a recorder.

Example::

    class Print:
        def start(self, phase, total): print(phase, total)
        def advance(self, phase, n): pass
        def finish(self, phase): print(phase, "done")
"""

from __future__ import annotations

import threading
from typing import Protocol


class ProgressSink(Protocol):
    def start(self, phase: str, total: int) -> None: ...

    def advance(self, phase: str, n: int) -> None: ...

    def finish(self, phase: str) -> None: ...


class NullProgress:
    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, phase: str, n: int) -> None:
        pass

    def finish(self, phase: str) -> None:
        pass


class Meter:
    """Thread-safe byte counter for one phase; forwards to the sink (which may not be thread-safe)."""

    def __init__(self, sink: ProgressSink | None, phase: str, total: int) -> None:
        self.sink = sink or NullProgress()
        self.phase = phase
        self._lock = threading.Lock()
        self.sink.start(phase, total)

    def __call__(self, n: int) -> None:
        with self._lock:
            self.sink.advance(self.phase, n)

    def finish(self) -> None:
        with self._lock:
            self.sink.finish(self.phase)
