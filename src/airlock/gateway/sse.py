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


def _events(block: bytes) -> list[bytes]:
    return [e for e in block.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]


def _data(event: bytes) -> Any:
    payload = b"".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
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
        kept: list[bytes] = []
        changed = False
        for event in _events(block):
            data = _data(event) if b'"usage"' in event else None
            if isinstance(data, dict) and isinstance(data.get("usage"), dict):
                self.usage = data["usage"]
                if self.drop_usage_only and not data.get("choices"):
                    changed = True
                    continue
            kept.append(event)
        if not changed:
            return block
        return b"".join(e + b"\n\n" for e in kept)
