"""The audit log: one JSON line per request (who, which model, what outcome, how many tokens).

Never the prompt or the answer: the log says who used what, not what they said. Lines are buffered
and written at least once a second (and at shutdown), so the request path only appends to a list.

    {"ts": 1795736966.15, "id": "4be1...", "key": "alice", "client": "10.0.0.7", "route": "/v1/chat/completions",
     "model": "smollm2", "status": 200, "ms": 412.7, "prompt_tokens": 37, "completion_tokens": 30}
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import IO, Any

import orjson


class AuditLog:
    def __init__(self, path: Path, flush_s: float = 1.0, max_buffered: int = 512) -> None:
        self.path = path
        self.flush_s = flush_s
        self.max_buffered = max_buffered
        self._lines: list[bytes] = []
        self._file: IO[bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._task = asyncio.get_running_loop().create_task(self._flush_periodically())

    def write(self, record: dict[str, Any]) -> None:
        self._lines.append(orjson.dumps(record) + b"\n")
        if len(self._lines) >= self.max_buffered:
            self.flush()

    def flush(self) -> None:
        if self._file is None or not self._lines:
            return
        lines, self._lines = self._lines, []
        self._file.write(b"".join(lines))
        self._file.flush()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
