"""Placing blobs on volumes of a fixed size.

Rules, in order: a blob that fits in the free space of a volume already opened goes into the first
such volume (first fit, so small files fill the gaps big ones leave); a blob that fits in an empty
volume opens a new one; a blob larger than a volume is split into parts that fill the last volume's
free space (when that space is worth using) and then as many new volumes as it takes. Parts of a
compressed blob are cut only between its frames, so each part decompresses on its own.

Placement depends only on the order and stored sizes of the blobs, so a re-run of an interrupted
pack computes the same plan and keeps what it already wrote.

Example::

    plan = plan_volumes([Item("ab..", 5_000)], capacity=4_000)
    [[(p.blob, p.part, p.offset, p.length) for p in v] for v in plan]
    # [[('ab..', 1, 0, 4000)], [('ab..', 2, 4000, 1000)]]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from airlock.bundle.format.compress import Frame
from airlock.errors import BundleError


@dataclass(frozen=True)
class Item:
    blob: str
    stored_size: int
    raw_size: int | None = None  # defaults to stored_size (raw blobs)
    frames: tuple[Frame, ...] = ()  # compressed blobs: where parts may be cut

    @property
    def raw(self) -> int:
        return self.stored_size if self.raw_size is None else self.raw_size


@dataclass(frozen=True)
class Placement:
    blob: str
    part: int | None  # None: the whole blob
    offset: int  # raw offset in the blob
    length: int  # raw bytes
    stored_offset: int  # offset in the blob's stored form
    stored_size: int


@dataclass
class _Volume:
    free: int
    items: list[Placement] = field(default_factory=list)


def min_part(capacity: int) -> int:
    """Free space smaller than this is not worth starting a part in."""
    return max(1, min(capacity // 64, 64 * 1024 * 1024))


def _cuts(item: Item) -> list[tuple[int, int]]:
    """(stored offset, raw offset) where a part may end, for a compressed blob."""
    cuts, stored, raw = [], 0, 0
    for frame in item.frames:
        stored += frame.stored
        raw += frame.raw
        cuts.append((stored, raw))
    return cuts


def _split(item: Item, volumes: list[_Volume], capacity: int) -> None:
    cuts = _cuts(item) if item.frames else None
    pieces: list[tuple[_Volume, int, int, int, int]] = []  # volume, stored off, stored len, raw off, raw len
    stored_pos, raw_pos = 0, 0
    target = volumes[-1] if volumes and volumes[-1].free >= min_part(capacity) else None
    while stored_pos < item.stored_size:
        if target is None:
            target = _Volume(free=capacity)
            volumes.append(target)
        room = min(target.free, item.stored_size - stored_pos)
        if cuts is None:
            end_stored, end_raw = stored_pos + room, raw_pos + room
        else:
            fitting = [c for c in cuts if stored_pos < c[0] <= stored_pos + room]
            if not fitting:
                if not target.items and target.free == capacity:
                    raise BundleError(
                        f"blob {item.blob[:12]}: a compressed frame is larger than a volume",
                        hint="choose a larger --volume-size",
                    )
                target = None
                continue
            end_stored, end_raw = fitting[-1]
        pieces.append((target, stored_pos, end_stored - stored_pos, raw_pos, end_raw - raw_pos))
        target.free -= end_stored - stored_pos
        stored_pos, raw_pos = end_stored, end_raw
        target = None
    for part, (volume, s_off, s_len, r_off, r_len) in enumerate(pieces, start=1):
        volume.items.append(Placement(item.blob, part, r_off, r_len, s_off, s_len))


def plan_volumes(items: list[Item], capacity: int) -> list[list[Placement]]:
    """Place ``items`` (in order) on volumes that hold at most ``capacity`` stored bytes each."""
    if capacity <= 0:
        raise BundleError("the volume size leaves no room for data", hint="choose a larger --volume-size")
    volumes: list[_Volume] = []
    for item in items:
        size = item.stored_size
        home = next((v for v in volumes if v.free >= size), None)
        if home is None and size <= capacity:
            home = _Volume(free=capacity)
            volumes.append(home)
        if home is not None:
            home.items.append(Placement(item.blob, None, 0, item.raw, 0, size))
            home.free -= size
        else:
            _split(item, volumes, capacity)
    return [v.items for v in volumes] or [[]]
