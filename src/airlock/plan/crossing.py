"""Plan the crossing: what ``airlock pack`` would carry for a spec, on how many volumes, copied how fast.

Each item (a model, the spec's files, an image, the wheels) lists its files with sizes and, where
known, their SHA-256 (the Hub's listing gives it for LFS files). With a base (what the other side
already holds: blob hashes and model commits, as ``airlock inventory`` writes them), only what it
lacks is counted. Volumes follow pack's rules: ``ceil(bytes / volume_size)`` data volumes (one
without a size) and ``max(1, ceil(k * parity% / 100))`` parity volumes, each as large as the largest
data volume. Sizes are before compression (weights barely compress); an item whose size is known
only at pack time (wheels pip fetches, an image in a registry) is listed with an unknown size.

Example::

    c = crossing([CarriedItem("model", "llama", files=(CarriedFile("model.safetensors", 16 * 10**9),))],
                 CrossingOptions(volume_size=25 * 10**9, parity_percent=10, media_bytes_per_s=200e6))
    c.data_volumes, c.parity_volumes, c.copy_seconds      # (1, 1, 160.0)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from airlock.common.fileio import temp_name


@dataclass(frozen=True)
class CarriedFile:
    path: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class CarriedItem:
    kind: str  # model | files | image | wheels
    name: str
    files: tuple[CarriedFile, ...] = ()
    known: bool = True  # False: its size is known only when pack fetches it
    commit: str | None = None  # a Hub model's commit (a base that holds it lacks none of its files)
    repo: str | None = None
    note: str = ""

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Base:
    """What the other side holds (an inventory): blob hashes, and models by (repo, commit)."""

    blobs: frozenset[str] = frozenset()
    models: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class CrossingOptions:
    volume_size: int | None = None  # pack's --volume-size (None: one volume)
    parity_percent: float = 0.0  # pack's --parity
    media_bytes_per_s: float | None = None  # --media-speed, or measured on the output disk
    speed_source: str = ""  # how the speed was known: "given", "measured on /media/usb1"
    base: Base | None = None


@dataclass(frozen=True)
class ItemCrossing:
    item: CarriedItem
    carried: int  # bytes pack would carry (what the base lacks)
    held: int  # bytes the base already holds


@dataclass(frozen=True)
class Crossing:
    items: tuple[ItemCrossing, ...]
    carried_bytes: int
    held_bytes: int
    unknown: tuple[str, ...]  # items of unknown size
    data_volumes: int
    parity_volumes: int
    volume_bytes: int  # the largest data volume (a parity volume's size)
    written_bytes: int  # data and parity: what is copied onto the media
    copy_seconds: float | None
    options: CrossingOptions = field(default_factory=CrossingOptions)


def crossing(items: Iterable[CarriedItem], options: CrossingOptions) -> Crossing:
    """The bytes, volumes and copy time of carrying ``items`` (only what ``options.base`` lacks)."""
    rows = tuple(_item(i, options.base) for i in items)
    carried = sum(r.carried for r in rows)
    size = options.volume_size
    data = max(1, math.ceil(carried / size)) if size else 1
    largest = min(carried, size) if size else carried
    parity = max(1, math.ceil(data * options.parity_percent / 100)) if options.parity_percent > 0 else 0
    written = carried + parity * largest
    speed = options.media_bytes_per_s
    return Crossing(
        items=rows, carried_bytes=carried, held_bytes=sum(r.held for r in rows),
        unknown=tuple(r.item.name for r in rows if not r.item.known), data_volumes=data, parity_volumes=parity,
        volume_bytes=largest, written_bytes=written, copy_seconds=written / speed if speed else None,
        options=options,
    )  # fmt: skip


def _item(item: CarriedItem, base: Base | None) -> ItemCrossing:
    if base is None:
        return ItemCrossing(item, item.bytes, 0)
    if item.repo and item.commit and (item.repo, item.commit) in base.models:
        return ItemCrossing(item, 0, item.bytes)
    held = sum(f.size for f in item.files if f.sha256 is not None and f.sha256 in base.blobs)
    return ItemCrossing(item, item.bytes - held, held)


def folder_files(root: Path) -> tuple[CarriedFile, ...]:
    """Every file under ``root`` (or ``root`` itself) with its size; links are followed as pack does."""
    if root.is_file():
        return (CarriedFile(root.name, root.stat().st_size),)
    return tuple(
        CarriedFile(p.relative_to(root).as_posix(), p.stat().st_size)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    )


def measure_write_speed(folder: Path, size: int = 64 * 1024 * 1024) -> float:
    """Bytes per second written to ``folder`` (a temp file of ``size`` bytes, fsynced, then removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / temp_name("airlock-speed")
    chunk = os.urandom(4 * 1024 * 1024)  # random: a compressing or deduplicating disk must not flatter it
    started = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        written = 0
        while written < size:
            written += os.write(fd, chunk[: size - written])
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return size / max(time.monotonic() - started, 1e-6)
