"""A file known only by its first bytes: a shard's or a GGUF file's header, fetched by range requests.

``PrefixFile`` is a read-only, seekable binary file of ``size`` bytes of which only a prefix is held;
a read past the prefix asks ``fetch`` for more (the next bytes exactly, or at least double the prefix
for a header of unknown length like GGUF's metadata), and without ``fetch`` (a prefix from the cache)
it is an error. Its size is known from the Hub's listing, so ``seek(0, 2)`` costs nothing.

The header readers in ``airlock.formats`` take an open file (``read_header_from``, ``read_gguf_from``),
so the same parsers read a local file and a remote prefix.

Example::

    f = PrefixFile(4_976_698_672, fetch=lambda a, b: ranged_get(url, a, b), first=16384, name="model-00001-of-00030.safetensors")
    header = read_safetensors_header(f)   # one range request: bytes=0-16383
    f.prefix[: 8 + header_length]          # what the cache keeps
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from airlock.errors import ModelFactsError
from airlock.formats.gguf import GgufFile, read_gguf_from
from airlock.formats.safetensors import SafetensorsHeader, read_header_from

Fetch = Callable[[int, int], bytes]  # the bytes from ``start`` to ``end``, both included


class PrefixFile(io.RawIOBase):
    """``size`` bytes of which a prefix is held; reads past it fetch more (or fail, without ``fetch``)."""

    def __init__(
        self,
        size: int,
        fetch: Fetch | None,
        *,
        name: str,
        prefix: bytes = b"",
        first: int = 0,
        double: bool = False,
    ) -> None:
        super().__init__()
        self.size, self.name = size, name
        self._fetch, self._first, self._double = fetch, first, double
        self._buf = bytearray(prefix[:size])
        self._pos = 0

    @property
    def prefix(self) -> bytes:
        """Every byte held so far (fetched or given)."""
        return bytes(self._buf)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self._pos + len(view), self.size)
        if end <= self._pos:
            return 0
        self._ensure(end)
        n = end - self._pos
        view[:n] = self._buf[self._pos : end]
        self._pos = end
        return n

    def _ensure(self, end: int) -> None:
        """Hold the bytes up to ``end`` (excluded): fetch the missing ones, or fail without a fetch."""
        have = len(self._buf)
        if end <= have:
            return
        if self._fetch is None:
            raise ModelFactsError(
                f"{self.name}: only the first {have:,} bytes are cached, and its header goes on",
                hint="plan it again online to refresh the cache",
            )
        target = max(end, self._first, 2 * have if self._double else 0)
        target = min(target, self.size)
        data = self._fetch(have, target - 1)
        if len(data) != target - have:
            raise ModelFactsError(f"{self.name}: asked bytes {have}-{target - 1}, got {len(data)} bytes")
        self._buf += data


def _binary(file: PrefixFile) -> BinaryIO:
    """A raw file's read, seek and tell are what the readers use; typeshed's RawIOBase.read may return
    None (a non-blocking stream), which a PrefixFile never does."""
    return cast(BinaryIO, file)


def read_safetensors_header(file: PrefixFile) -> tuple[SafetensorsHeader, int]:
    """The shard's header, and how many bytes of the prefix it spans (8 + its length)."""
    header = read_header_from(_binary(file), Path(file.name))
    length = int.from_bytes(file.prefix[:8], "little")
    return header, 8 + length


def read_gguf_header(file: PrefixFile) -> GgufFile:
    """The GGUF file's metadata and tensor table."""
    return read_gguf_from(_binary(file), Path(file.name))
