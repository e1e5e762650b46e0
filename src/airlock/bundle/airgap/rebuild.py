"""``airlock rebuild``: lost or damaged volumes rebuilt from the others and the parity volumes.

As many volumes as the bundle has parity volumes can be rebuilt, all in one pass over the others.

The scheme (rows, blocks, shares) is :mod:`airlock.bundle.format.parity`. Every volume used is
verified first; every rebuilt entry is checked against the manifest before it is kept.

Example::

    result = rebuild(RebuildOptions(VolumeSet([Path("/media/usb1"), Path("/media/usb3")],
                                              trust=[Path("site.pub")]),
                                    volume=(2, 5), out=Path("/tmp/rebuilt")))
    [v.path for v in result.rebuilt]  # /tmp/rebuilt/vol-0002, /tmp/rebuilt/vol-0005
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import zfec

from airlock.bundle.airgap.verify import check_volumes
from airlock.bundle.format import layout
from airlock.bundle.format.manifest import Entry, Manifest, Parity, Volume, VolumeIndex
from airlock.bundle.format.parity import ShareSink, volume_stream
from airlock.bundle.format.reader import MountedVolume, OpenBundle, VolumeSet, read_small
from airlock.common.fileio import Disk, fsync_dir, write_atomic
from airlock.common.progress import Meter
from airlock.common.words import counted, numbers
from airlock.errors import BundleError, IntegrityError


@dataclass(frozen=True)
class RebuildOptions:
    volumes: VolumeSet  # the volumes still at hand
    volume: int | tuple[int, ...]  # the number of each volume to rebuild (as many as parity volumes)
    out: Path

    @property
    def targets(self) -> list[int]:
        """The volumes to rebuild, each once, in order."""
        return sorted({self.volume} if isinstance(self.volume, int) else set(self.volume))


@dataclass(frozen=True)
class RebuiltVolume:
    number: int
    path: Path
    bytes: int


@dataclass(frozen=True)
class RebuildResult:
    rebuilt: list[RebuiltVolume]  # every volume asked for, in order
    used: list[int]  # the volumes they were rebuilt from

    @property
    def path(self) -> Path:
        """Where the first (with one volume asked for: the) volume rebuilt is."""
        return self.rebuilt[0].path

    @property
    def bytes(self) -> int:
        return sum(v.bytes for v in self.rebuilt)


class _EntryWriter:
    """Splits a volume's rebuilt stream back into its entry files, checking each against the manifest."""

    def __init__(self, root: Path, entries: list[Entry], chunk_size: int, disk: Disk) -> None:
        self.root = root
        self.entries = list(entries)
        self.chunk_size = chunk_size
        self.disk = disk
        self.index = 0
        self.sink: ShareSink | None = None
        self.bad: list[str] = []

    def _open(self) -> None:
        while self.sink is None and self.index < len(self.entries):
            entry = self.entries[self.index]
            self.sink = ShareSink(self.root / entry.path, self.chunk_size, self.disk)
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
    """Check the volumes at hand, decode the lost ones row by row (all in one pass), then write their metadata."""
    opened = options.volumes.open()
    parity = opened.manifest.parity
    if parity is None:
        raise BundleError("this bundle has no parity volumes (pack it with --parity)")
    targets = _targets(opened, options, parity)
    roots = [options.out / t.name for t in targets]
    for root in roots:
        if root.exists() and any(root.iterdir()):
            raise BundleError(
                f"{root}: not empty; rebuild writes a fresh volume", hint="choose an empty --out"
            )
    use = _intact_volumes(opened, options, parity.data_volumes)
    writers = [
        _EntryWriter(root, t.entries, opened.manifest.chunk_size, options.volumes.disk)
        for t, root in zip(targets, roots, strict=True)
    ]
    _decode(opened.manifest, parity, use, list(zip(targets, writers, strict=True)), options.volumes)
    for target, root in zip(targets, roots, strict=True):
        _write_metadata(opened, target, root, [v.root for v in use])
    return RebuildResult(
        [RebuiltVolume(t.number, root, t.stored_bytes) for t, root in zip(targets, roots, strict=True)],
        [v.number for v in use],
    )


def _targets(opened: OpenBundle, options: RebuildOptions, parity: Parity) -> list[Volume]:
    volumes = opened.manifest.volumes
    wanted = options.targets
    outside = [n for n in wanted if not 1 <= n <= len(volumes)]
    if outside:
        raise BundleError(f"volume {outside[0]}: the set has volumes 1 to {len(volumes)}")
    if len(wanted) > parity.parity_volumes:
        raise BundleError(
            f"cannot rebuild {numbers(wanted)}: the bundle has {counted(parity.parity_volumes, 'parity volume')}, "
            f"so parity rebuilds at most {counted(parity.parity_volumes, 'volume')} of the set",
            hint="rebuild fewer volumes, or bring a copy of the others from the staging side",
        )
    return [volumes[n - 1] for n in wanted]


def _intact_volumes(opened: OpenBundle, options: RebuildOptions, k: int) -> list[MountedVolume]:
    """The ``k`` volumes to decode from: verified first, data volumes before parity volumes."""
    manifest = opened.manifest
    others = [opened.volumes[n] for n in sorted(opened.volumes) if n not in options.targets]
    problems, _ = check_volumes(
        opened, others, workers=options.volumes.workers, progress=options.volumes.progress
    )
    # a damaged copy of the metadata (manifest, signature, index) leaves the volume's entries usable
    damaged = {p.volume for p in problems if p.path not in layout.METADATA_FILES}
    intact = [v for v in others if v.number not in damaged]
    if len(intact) < k:
        raise BundleError(
            f"cannot rebuild {numbers(options.targets)}: {counted(k, 'intact volume')} needed, "
            f"{len(intact)} mounted ({', '.join(str(v.number) for v in intact) or 'none'})",
            hint="mount more volumes of the set",
        )
    return sorted(intact, key=lambda v: (manifest.volumes[v.number - 1].role != "data", v.number))[:k]


def _decode(
    manifest: Manifest,
    parity: Parity,
    use: list[MountedVolume],
    targets: list[tuple[Volume, _EntryWriter]],
    volumes: VolumeSet,
) -> None:
    """Recover each target's stream row by row (a data volume's blocks, or a parity volume's share)."""
    k, block, rows = parity.data_volumes, parity.block, parity.rows
    # A parity volume's one entry, its share, is exactly ``rows`` blocks: the same stream serves both roles.
    streams = [volume_stream(v.root, manifest.volumes[v.number - 1].entries, rows, block) for v in use]
    nums = tuple(v.number - 1 for v in use)  # zfec block number = volume number - 1
    decoder = zfec.Decoder(k, k + parity.parity_volumes)
    encoder = zfec.Encoder(k, k + parity.parity_volumes)
    meter = Meter(volumes.progress, "rebuild", rows * block)
    try:
        for _ in range(rows):
            blocks = tuple(next(s) for s in streams)
            if sorted(nums) == list(range(k)):
                order = sorted(range(k), key=lambda i: nums[i])
                primary = [blocks[i] for i in order]
            else:
                primary = [bytes(b) for b in decoder.decode(blocks, nums)]
            for target, writer in targets:
                if target.role == "data":
                    writer.feed(primary[target.number - 1])
                else:
                    (share,) = encoder.encode(tuple(primary), (target.number - 1,))
                    writer.feed(bytes(share))
            meter(block)
        for _, writer in targets:
            writer.finish()
    finally:
        for _, writer in targets:
            writer.abort()
        meter.finish()
    for target, writer in targets:
        if writer.bad:
            raise IntegrityError(
                f"volume {target.number} was rebuilt but {', '.join(writer.bad)} do not match the manifest",
                hint="another volume used is damaged in a way its hashes did not show; mount other volumes",
            )


def _sbom(opened: OpenBundle, sources: list[Path]) -> bytes | None:
    """The SBOM from the first volume whose copy is the one the manifest names."""
    ref = opened.manifest.sbom
    if ref is None:
        return None
    for source in sources:
        path = source / layout.SBOM
        if not path.is_file() or path.is_symlink():
            continue
        data = read_small(path, what="SBOM")
        if len(data) == ref.size and hashlib.sha256(data).hexdigest() == ref.sha256:
            return data
    return None


def _write_metadata(opened: OpenBundle, target: Volume, root: Path, sources: list[Path]) -> None:
    """The manifest and signature trusted, an SBOM the manifest names, and the rebuilt volume's own index."""
    write_atomic(root / layout.MANIFEST, opened.manifest_bytes)
    if opened.signature is not None:
        write_atomic(root / layout.SIGNATURE, opened.signature)
    sbom = _sbom(opened, sources)
    if sbom is not None:
        write_atomic(root / layout.SBOM, sbom)
    write_atomic(
        root / layout.VOLUME_INDEX, VolumeIndex.of(opened.manifest, opened.bundle, target).to_bytes()
    )
    fsync_dir(root)
