"""Server-sent events as they pass through: split complete events, read usage, drop what we added.

Bytes are forwarded as soon as an event is complete; only a trailing partial event waits for the
rest of itself. Only events that mention ``"usage"`` are parsed, so the cost per token is a split
and a substring search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

_SEPARATORS = (b"\r\n\r\n", b"\n\n")


def split_complete(buffer: bytes) -> tuple[bytes, bytes]:
    """(complete events, the partial tail) of an SSE byte buffer."""
    end = -1
    for sep in _SEPARATORS:
        i = buffer.rfind(sep)
        if i >= 0:
            end = max(end, i + len(sep))
    if end < 0:
        return b"", buffer
    return buffer[:end], buffer[end:]


def _data(event: bytes) -> Any:
    lines = event.replace(b"\r\n", b"\n").split(b"\n")
    payload = b"".join(line[5:].lstrip() for line in lines if line.startswith(b"data:"))
    if not payload or payload == b"[DONE]":
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


@dataclass
class UsageScanner:
    """Feed it upstream chunks; it returns what to forward and remembers the last ``usage`` seen.

    With ``drop_usage_only`` (the gateway asked for usage that the client did not), the final
    usage-only chunk (``"choices": []``) is removed from the stream.
    """

    drop_usage_only: bool = False
    usage: dict[str, Any] | None = None
    _tail: bytes = field(default=b"", repr=False)

    def feed(self, chunk: bytes) -> bytes:
        complete, self._tail = split_complete(self._tail + chunk)
        if not complete or b'"usage"' not in complete:
            return complete
        return self._scan(complete)

    def flush(self) -> bytes:
        rest, self._tail = self._tail, b""
        return self._scan(rest) if b'"usage"' in rest else rest

    def _scan(self, block: bytes) -> bytes:
        """Parse only the events that mention usage, found by position; cut the usage-only one out.

        The rest of the block is passed on as it came (no split and join of every event)."""
        cuts: list[tuple[int, int]] = []
        search = 0
        while (i := block.find(b'"usage"', search)) >= 0:
            start, end = _event_bounds(block, i)
            search = end
            data = _data(block[start:end])
            if isinstance(data, dict) and isinstance(data.get("usage"), dict):
                self.usage = data["usage"]
                if self.drop_usage_only and not data.get("choices"):
                    cuts.append((start, end))
        if not cuts:
            return block
        kept: list[bytes] = []
        at = 0
        for start, end in cuts:
            kept.append(block[at:start])
            at = end
        kept.append(block[at:])
        return b"".join(kept)


def _event_bounds(block: bytes, at: int) -> tuple[int, int]:
    """[start, end) of the event holding byte ``at``: from the end of the separator before it to the
    end of the separator after it (or the block's ends)."""
    start = 0
    for sep in _SEPARATORS:
        j = block.rfind(sep, 0, at)
        if j >= 0:
            start = max(start, j + len(sep))
    end = len(block)
    for sep in _SEPARATORS:
        j = block.find(sep, at)
        if j >= 0:
            end = min(end, j + len(sep))
    return start, end
