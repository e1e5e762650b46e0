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
from dataclasses import dataclass, field
from pathlib import Path

import zfec

from airlock.bundle import layout
from airlock.bundle.compress import ChunkHasher
from airlock.bundle.fileio import (
    DEFAULT_DISK,
    Disk,
    fsync_dir,
    full_disk_named,
    read_ranges,
    temp_name,
    write_atomic,
)
from airlock.bundle.manifest import Entry, Parity, Volume, VolumeIndex, chunk_spans
from airlock.bundle.progress import Meter, ProgressSink
from airlock.bundle.reader import open_bundle, read_small
from airlock.bundle.sign import load_public_key
from airlock.bundle.verify import check_volumes
from airlock.errors import BundleError, IntegrityError

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


def _rows(volumes: list[Volume], block: int) -> int:
    return -(-max((v.stored_bytes for v in volumes), default=0) // block)


def _share_entry(path: str, size: int, whole: str, chunks: list[str], chunk_size: int) -> Entry:
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
    size = _rows(volumes, block) * block
    zero = "0" * 64
    chunks = [zero] * len(chunk_spans(size, chunk_size))
    return [
        Volume(
            number=k + j,
            role="parity",
            entries=[_share_entry(layout.parity_path(j), size, zero, chunks, chunk_size)],
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


class _Sink:
    """Writes one file through a temp name, hashing it whole and per chunk."""

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


def write_parity(
    out: Path,
    volumes: list[Volume],
    count: int,
    block: int,
    *,
    chunk_size: int,
    disk: Disk = DEFAULT_DISK,
    progress: ProgressSink | None = None,
) -> tuple[Parity, list[Volume]]:
    """Compute ``count`` parity volumes over the data ``volumes`` written under ``out``."""
    k = len(volumes)
    rows = _rows(volumes, block)
    streams = [volume_stream(out / v.name, v.entries, rows, block) for v in volumes]
    sinks = [
        _Sink(out / layout.volume_name(k + j) / layout.parity_path(j), chunk_size, disk)
        for j in range(1, count + 1)
    ]
    encoder = zfec.Encoder(k, k + count)
    wanted = tuple(range(k, k + count))
    meter = Meter(progress, "parity", rows * block * k)
    try:
        for _ in range(rows):
            blocks = tuple(next(s) for s in streams)
            for sink, share in zip(sinks, encoder.encode(blocks, wanted), strict=True):
                sink.write(bytes(share))
            meter(block * k)
        results = [sink.commit() for sink in sinks]
    finally:
        for sink in sinks:
            sink.abort()
        meter.finish()
    parity_volumes = [
        Volume(
            number=k + j,
            role="parity",
            entries=[_share_entry(layout.parity_path(j), rows * block, whole, chunks, chunk_size)],
        )
        for j, (whole, chunks) in enumerate(results, start=1)
    ]
    return Parity(data_volumes=k, parity_volumes=count, block=block, rows=rows), parity_volumes


# -- rebuilding on the air-gapped side ----------------------------------------------------------


@dataclass(frozen=True)
class RebuildOptions:
    dirs: list[Path]
    volume: int
    out: Path
    trust: list[Path] = field(default_factory=list)
    allow_unsigned: bool = False
    workers: int = 2
    disk: Disk = DEFAULT_DISK
    progress: ProgressSink | None = None


@dataclass(frozen=True)
class RebuildResult:
    volume: int
    path: Path
    used: list[int]  # the volumes it was rebuilt from
    bytes: int


class _EntryWriter:
    """Splits a volume's rebuilt stream back into its entry files, checking each against the manifest."""

    def __init__(self, root: Path, entries: list[Entry], chunk_size: int, disk: Disk) -> None:
        self.root = root
        self.entries = list(entries)
        self.chunk_size = chunk_size
        self.disk = disk
        self.index = 0
        self.sink: _Sink | None = None
        self.bad: list[str] = []

    def _open(self) -> None:
        while self.sink is None and self.index < len(self.entries):
            entry = self.entries[self.index]
            self.sink = _Sink(self.root / entry.path, self.chunk_size, self.disk)
            if entry.stored_size == 0:
                self._close()

    def _close(self) -> None:
        assert self.sink is not None
        entry = self.entries[self.index]
        whole, chunks = self.sink.commit()
        ok = chunks == entry.chunks if entry.chunks else whole == entry.stored_sha256
        if not ok:
            self.bad.append(entry.path)
        self.sink = None
        self.index += 1

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._open()
            if self.sink is None:
                return  # zero padding past the last entry
            entry = self.entries[self.index]
            take = min(len(view), entry.stored_size - self.sink.pos)
            self.sink.write(bytes(view[:take]))
            view = view[take:]
            if self.sink.pos == entry.stored_size:
                self._close()

    def finish(self) -> None:
        self._open()
        if self.sink is not None or self.index < len(self.entries):
            raise IntegrityError("the rebuilt stream ended before every entry was written")

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()


def rebuild(options: RebuildOptions) -> RebuildResult:
    trusted = [load_public_key(p) for p in options.trust]
    opened = open_bundle(options.dirs, trusted, allow_unsigned=options.allow_unsigned)
    manifest = opened.manifest
    parity = manifest.parity
    if parity is None:
        raise BundleError("this bundle has no parity volumes (pack it with --parity)")
    if not 1 <= options.volume <= len(manifest.volumes):
        raise BundleError(f"volume {options.volume}: the set has volumes 1 to {len(manifest.volumes)}")
    target = manifest.volumes[options.volume - 1]
    root = options.out / target.name
    if root.exists() and any(root.iterdir()):
        raise BundleError(f"{root}: not empty; rebuild writes a fresh volume", hint="choose an empty --out")
    others = [opened.volumes[n] for n in sorted(opened.volumes) if n != options.volume]
    problems, _ = check_volumes(opened, others, workers=options.workers, progress=options.progress)
    damaged = {p.volume for p in problems}
    intact = [v for v in others if v.number not in damaged]
    k = parity.data_volumes
    if len(intact) < k:
        raise BundleError(
            f"cannot rebuild volume {options.volume}: {k} intact volumes are needed, {len(intact)} are mounted "
            f"({', '.join(str(v.number) for v in intact) or 'none'})",
            hint="mount more volumes of the set",
        )
    use = sorted(intact, key=lambda v: (manifest.volumes[v.number - 1].role != "data", v.number))[:k]
    block, rows = parity.block, parity.rows
    # A parity volume's one entry, its share, is exactly ``rows`` blocks: the same stream serves both roles.
    streams = [volume_stream(v.root, manifest.volumes[v.number - 1].entries, rows, block) for v in use]
    nums = tuple(v.number - 1 for v in use)  # zfec block number = volume number - 1
    decoder = zfec.Decoder(k, k + parity.parity_volumes)
    encoder = zfec.Encoder(k, k + parity.parity_volumes)
    writer = _EntryWriter(root, target.entries, manifest.chunk_size, options.disk)
    meter = Meter(options.progress, "rebuild", rows * block)
    try:
        for _ in range(rows):
            blocks = tuple(next(s) for s in streams)
            if sorted(nums) == list(range(k)):
                order = sorted(range(k), key=lambda i: nums[i])
                primary = [blocks[i] for i in order]
            else:
                primary = [bytes(b) for b in decoder.decode(blocks, nums)]
            if target.role == "data":
                writer.feed(primary[target.number - 1])
            else:
                (share,) = encoder.encode(tuple(primary), (target.number - 1,))
                writer.feed(bytes(share))
            meter(block)
        writer.finish()
    finally:
        writer.abort()
        meter.finish()
    if writer.bad:
        raise IntegrityError(
            f"volume {options.volume} was rebuilt but {', '.join(writer.bad)} do not match the manifest",
            hint="another volume used is damaged in a way its hashes did not show; mount other volumes",
        )
    source = use[0].root
    write_atomic(root / layout.MANIFEST, opened.manifest_bytes)
    sig = source / layout.SIGNATURE
    if sig.exists():
        write_atomic(root / layout.SIGNATURE, read_small(sig, what="signature"))
    sbom = source / layout.SBOM
    if sbom.exists():
        write_atomic(root / layout.SBOM, read_small(sbom, what="SBOM"))
    write_atomic(root / layout.VOLUME_INDEX, VolumeIndex.of(manifest, opened.bundle, target).to_bytes())
    fsync_dir(root)
    return RebuildResult(options.volume, root, [v.number for v in use], target.stored_bytes)
