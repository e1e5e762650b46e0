"""Reed-Solomon parity over the data volumes (through ``zfec``): rebuild a lost or damaged volume.

Each data volume is read as one stream (its entries' stored bytes in manifest order, zero-padded to
``rows * block``). Row ``r`` takes ``block`` bytes from each of the ``k`` data volumes; zfec turns
them into ``p`` parity blocks, one per parity volume (``parity/share-NN.rs``). Any ``k`` of the
``k + p`` volumes then give back all of them, so up to ``p`` volumes may be lost or damaged and be
rebuilt on the air-gapped side instead of walking new media across.

``--parity PERCENT`` asks for ``ceil(k * PERCENT / 100)`` parity volumes (at least one): with four
data volumes, ``--parity 25`` adds one; a bundle of one volume gets a full copy (k=1, p=1).

Example::

    result = rebuild(RebuildOptions(dirs=[Path("/media/usb1"), Path("/media/usb3")], volume=2,
                                    out=Path("/tmp/rebuilt"), trust=[Path("site.pub")]))
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

from airlock.bundle.format import layout
from airlock.bundle.format.compress import ChunkHasher
from airlock.bundle.format.manifest import Entry, Volume, chunk_spans
from airlock.common.fileio import (
    Disk,
    full_disk_named,
    read_ranges,
    temp_name,
)
from airlock.errors import BundleError

MAX_SHARES = 256


def choose_block(volume_size: int | None) -> int:
    """Bytes per volume per row: 1 MiB, smaller for small volumes (a volume wastes < one block)."""
    block = 1024 * 1024
    while volume_size is not None and block > 512 and block * 64 > volume_size:
        block //= 2
    return block


def parity_volume_count(data_volumes: int, percent: float) -> int:
    count = max(1, math.ceil(data_volumes * percent / 100))
    if data_volumes + count > MAX_SHARES:
        raise BundleError(
            f"{data_volumes} data volumes and {count} parity volumes exceed zfec's {MAX_SHARES} shares",
            hint="choose a larger --volume-size or less --parity",
        )
    return count


def rows_of(volumes: list[Volume], block: int) -> int:
    return -(-max((v.stored_bytes for v in volumes), default=0) // block)


def share_entry(path: str, size: int, whole: str, chunks: list[str], chunk_size: int) -> Entry:
    return Entry(
        path=path,
        blob=None,
        part=None,
        offset=0,
        length=size,
        stored_size=size,
        stored_sha256=whole,
        chunks=chunks if chunk_spans(size, chunk_size) else [],
    )


def parity_placeholders(volumes: list[Volume], percent: float, block: int, chunk_size: int) -> list[Volume]:
    """Parity volumes with placeholder hashes, to size the manifest before anything is written."""
    k = len(volumes)
    size = rows_of(volumes, block) * block
    zero = "0" * 64
    chunks = [zero] * len(chunk_spans(size, chunk_size))
    return [
        Volume(
            number=k + j,
            role="parity",
            entries=[share_entry(layout.parity_path(j), size, zero, chunks, chunk_size)],
        )
        for j in range(1, parity_volume_count(k, percent) + 1)
    ]


def volume_stream(root: Path, entries: list[Entry], rows: int, block: int) -> Iterator[bytes]:
    """A data volume's bytes, ``block`` at a time, zero-padded to ``rows`` blocks; links are refused."""
    buf = bytearray()
    sent = 0
    for e in entries:
        for data in read_ranges(root / e.path, 0, e.stored_size, follow=False):
            buf += data
            while len(buf) >= block:
                yield bytes(buf[:block])
                del buf[:block]
                sent += 1
    if buf:
        yield bytes(buf) + bytes(block - len(buf))
        sent += 1
    while sent < rows:
        yield bytes(block)
        sent += 1


class ShareSink:
    """Writes one file (a parity share, or a rebuilt entry) through a temp name, hashing it whole and per chunk."""

    def __init__(self, final: Path, chunk_size: int, disk: Disk) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        self.final = final
        self.tmp = final.with_name(temp_name(final.name))
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.hasher = ChunkHasher(chunk_size)
        self.pos = 0
        self.disk = disk

    def write(self, data: bytes) -> None:
        with full_disk_named(self.final, needed=len(data)):
            self.disk.write(self.fd, memoryview(data), self.pos)
        self.pos += len(data)
        self.hasher.update(data)

    def commit(self) -> tuple[str, list[str]]:
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        os.replace(self.tmp, self.final)
        return self.hasher.whole.hexdigest(), self.hasher.finish()

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
