"""``airlock pack``: a spec in, a signed bundle of volumes out.

The verb runs in three stages, like zarf's ``create``: load (spec, key, base), assemble (collect the
sources, check them, hash them, decide what to carry and where it goes) and write (blobs onto
volumes, parity, SBOM, then the manifest, its signature and each volume's index, last, so a folder
that lacks them is visibly unfinished). Every stage can be interrupted and re-run: downloads resume,
hashes are cached and blobs already written are re-hashed and kept (see :mod:`writer`).

Each byte is read once: a file hashed for the first time is copied into the first volume's blob folder
in the same read (:class:`~.hashing.Stager`), and the writer renames it into place; a file whose hash
is cached (a re-run) is read once, by the writer. Not staged, and so read a second time to be
written: a file that may be a duplicate of another (the same size and the same first and last
64 KiB), one larger than a volume (it is split), and every file with ``--compress`` or ``--base``
(most of them may never be written raw).

Example::

    result = pack(PackOptions(spec_path=Path("airlock.yaml"), out=Path("bundle"),
                              volume_size=4_000_000_000, sign_key=Path("airlock.key")))
    result.bundle, [v.path for v in result.volumes]
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from airlock import __version__
from airlock.bundle.format import layout
from airlock.bundle.format.compress import Encoded
from airlock.bundle.format.manifest import (
    Artifact,
    BaseRef,
    Blob,
    Bootstrap,
    Entry,
    FileEntry,
    Manifest,
    Parity,
    SbomRef,
    Volume,
    VolumeIndex,
    chunk_spans,
    utc_now,
)
from airlock.bundle.format.sign import MANIFEST_CONTEXT, key_id, load_private_key, sign
from airlock.bundle.staging.collect import CollectOptions, collect
from airlock.bundle.staging.hashing import HashCache, Hashed, Stager, ToHash, hash_files
from airlock.bundle.staging.sources.base import Collected, content_commit
from airlock.bundle.staging.volumes import Item, Placement, plan_volumes
from airlock.bundle.staging.writer import StoredSource, VolumeWriter, entry_path
from airlock.common.fileio import DEFAULT_DISK, Disk, full_disk_named, write_atomic
from airlock.common.progress import ProgressSink
from airlock.common.threads import default_workers
from airlock.errors import BundleError, SourceError
from airlock.spec import Spec, load_spec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from airlock.bundle.staging.bootstrap import MadeBootstrap
    from airlock.bundle.staging.delta import Base

MIB = 1024 * 1024
DEFAULT_CHUNK = 64 * MIB
UNLIMITED = 1 << 62
Compression = Literal["none", "zstd", "auto"]


@dataclass(frozen=True)
class PackOptions:
    spec_path: Path
    out: Path
    volume_size: int | None = None  # None: one volume
    sign_key: Path | None = None  # None: unsigned (verify then needs --allow-unsigned)
    base: Path | None = None  # an earlier manifest.json or an inventory.json (delta)
    trust: tuple[Path, ...] = ()  # public keys that may have signed the base
    allow_pickle: bool = False
    parity_percent: float = 0.0
    compress: Compression = "none"
    compress_frame: int = (
        16 * MIB
    )  # raw bytes per zstd frame: parts of a compressed blob are cut between frames
    chunk_size: int = DEFAULT_CHUNK
    workers: int = field(default_factory=default_workers)
    hf_endpoint: str | None = None
    hf_cache: Path | None = None
    hf_token: str | None = None
    pip_python: Path | None = None
    platform: str = "linux/amd64"  # images: the platform taken from a multi-platform index
    image_cache: Path | None = None  # images: default AIRLOCK_CACHE/images
    created: str | None = None  # default: now (UTC)
    with_airlock: bool | None = None  # airlock itself, bootstrap/ (None: when wheels name a platform)
    airlock_wheel: Path | None = None  # airlock's wheel to carry (default: built from this checkout)
    bootstrap_cache: Path | None = None  # default: AIRLOCK_CACHE/bootstrap
    disk: Disk = DEFAULT_DISK
    progress: ProgressSink | None = None


@dataclass(frozen=True)
class PackedVolume:
    number: int
    path: Path
    role: str
    bytes: int
    entries: int


@dataclass(frozen=True)
class PackResult:
    out: Path
    bundle: str
    manifest: Manifest
    volumes: list[PackedVolume]
    signed_by: str | None
    files: int
    blobs: int
    carried_bytes: int  # raw bytes of the blobs carried
    stored_bytes: int  # bytes on the volumes (after compression, with parity)
    skipped_blobs: int  # already on the other side (--base)
    skipped_bytes: int
    written_bytes: int
    kept_bytes: int  # already written into ``out`` by an earlier run, re-hashed and kept
    warnings: list[str]
    earlier_finished: bool = False  # ``out`` held a finished bundle (a manifest) before this run
    bootstrap: Bootstrap | None = None  # airlock's own wheels on the first volume (--with-airlock)


@contextlib.contextmanager
def _locked_out(out: Path) -> Iterator[Path]:
    """Prepare ``out`` and its state folder beside it (:func:`layout.pack_state_dir`) and hold the lock;
    refuse a folder that holds anything but an earlier pack."""
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out}: not a folder")
    out.mkdir(parents=True, exist_ok=True)
    state = layout.pack_state_dir(out)
    legacy = out / layout.PACK_STATE_DIR  # where airlock 0.1 kept it: moved out, so it is never copied
    if legacy.is_dir() and not state.exists():
        os.replace(legacy, state)
    if not state.is_dir():
        foreign = [p.name for p in out.iterdir()]
        if foreign:
            raise BundleError(
                f"{out}: not empty and not an earlier pack's folder (holds {', '.join(sorted(foreign)[:3])})",
                hint="choose an empty --out folder",
            )
        try:
            state.mkdir()
        except OSError as exc:
            raise BundleError(
                f"{state}: cannot make pack's working folder beside {out}: {exc.strerror}",
                hint="give --out a folder inside the medium (e.g. /media/usb/bundle), not its mount point",
            ) from exc
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BundleError(f"{out}: another pack is writing this folder") from exc
        yield state
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Origin:
    """The first logical file holding a blob: where pack reads its raw bytes."""

    path: Path
    hashed: Hashed
    name: str  # "artifact/path", for errors

    @property
    def size(self) -> int:
        return self.hashed.stamp.size


@dataclass(frozen=True)
class _Loaded:
    """The load stage: the spec, the signing key and the base a delta is made against."""

    spec: Spec
    key: Ed25519PrivateKey | None
    base: Base | None
    warnings: list[str]


@dataclass(frozen=True)
class _Assembled:
    """The assemble stage: everything the manifest says but where each blob goes."""

    spec: Spec
    artifacts: list[Artifact]
    blobs: dict[str, Blob]  # every distinct blob, in order; carried or not
    sources: dict[str, StoredSource]  # where each carried blob's stored bytes are read
    items: list[Item]  # what the planner places
    base: BaseRef | None
    created: str
    sbom: bytes
    bootstrap: MadeBootstrap | None = None

    def manifest(self, options: PackOptions, volumes: list[Volume], parity: Parity | None) -> Manifest:
        return Manifest(**self._fields(options), volumes=volumes, parity=parity)

    def draft(self, options: PackOptions) -> Manifest:
        """The manifest without volumes, unchecked: the planner measures it to size each volume's room."""
        return Manifest.model_construct(**self._fields(options), volumes=[], parity=None)

    def _fields(self, options: PackOptions) -> _ManifestFields:
        return _ManifestFields(
            created=self.created,
            airlock_version=__version__,
            volume_size=options.volume_size,
            chunk_size=options.chunk_size,
            spec=self.spec.model_dump(mode="json", exclude_defaults=True),
            artifacts=self.artifacts,
            blobs=list(self.blobs.values()),
            base=self.base,
            sbom=SbomRef(sha256=_sha(self.sbom), size=len(self.sbom)),
            bootstrap=self.bootstrap.record if self.bootstrap is not None else None,
        )


class _ManifestFields(TypedDict):
    """The manifest's fields but its volumes and parity: shared by the draft and the final manifest."""

    created: str
    airlock_version: str
    volume_size: int | None
    chunk_size: int
    spec: dict[str, Any]
    artifacts: list[Artifact]
    blobs: list[Blob]
    base: BaseRef | None
    sbom: SbomRef
    bootstrap: Bootstrap | None


def _artifacts(
    collected: list[Collected], hashes: dict[Path, Hashed]
) -> tuple[list[Artifact], dict[str, _Origin]]:
    """Artifacts for the manifest, and each distinct blob's first origin (in order)."""
    artifacts: list[Artifact] = []
    origins: dict[str, _Origin] = {}
    for c in collected:
        entries = []
        for f in c.files:
            h = hashes[f.origin]
            entries.append(FileEntry(path=f.path, size=h.stamp.size, sha256=h.sha256))
            origins.setdefault(h.sha256, _Origin(f.origin, h, f"{c.name}/{f.path}"))
        source = c.source
        if source.type in ("local", "gguf"):
            source = source.model_copy(update={"commit": content_commit((e.path, e.sha256) for e in entries)})
        artifacts.append(
            Artifact(
                kind=c.kind,
                name=c.name,
                repo=c.repo,
                source=source,
                license=c.license,
                files=entries,
                image=c.image,
            )
        )
    return artifacts, origins


def _placeholder_entries(plan: list[list[Placement]], blobs: dict[str, Blob], chunk: int) -> list[Volume]:
    zero = "0" * 64
    volumes = []
    for number, placements in enumerate(plan, start=1):
        entries = [
            Entry(
                path=entry_path(p, blobs[p.blob].encoding == "zstd"),
                blob=p.blob,
                part=p.part,
                offset=p.offset,
                length=p.length,
                stored_size=p.stored_size,
                stored_sha256=p.blob if p.part is None and blobs[p.blob].encoding == "raw" else zero,
                chunks=[zero] * len(chunk_spans(p.stored_size, chunk)),
            )
            for p in placements
        ]
        volumes.append(Volume(number=number, entries=entries))
    return volumes


def _plan(
    items: list[Item],
    blobs: dict[str, Blob],
    draft: Manifest,
    sbom_size: int,
    options: PackOptions,
    parity_block: int | None,
    bootstrap_size: int = 0,
) -> list[list[Placement]]:
    """Place blobs, leaving each volume room for its metadata (manifest, index, signature, SBOM).

    The first volume's bootstrap folder (``--with-airlock``) is left room for on every volume: the
    planner gives all volumes one capacity.
    """
    if options.volume_size is None:
        return plan_volumes(items, UNLIMITED)
    reserve = 4096
    for _ in range(8):
        capacity = options.volume_size - reserve
        if parity_block:
            capacity -= capacity % parity_block
        if capacity <= 0:
            break
        placements = plan_volumes(items, capacity)
        volumes = _placeholder_entries(placements, blobs, options.chunk_size)
        if parity_block:
            from airlock.bundle.format.parity import parity_placeholders

            volumes += parity_placeholders(volumes, options.parity_percent, parity_block, options.chunk_size)
        manifest = draft.model_copy(update={"volumes": volumes})
        biggest_index = max(len(VolumeIndex.of(manifest, "0" * 64, v).to_bytes()) for v in volumes)
        needed = len(manifest.to_bytes()) + biggest_index + sbom_size + bootstrap_size + 1024
        if needed <= reserve:
            return placements
        reserve = needed + needed // 4 + 4096
    raise BundleError(
        f"a volume size of {options.volume_size} bytes is too small: the manifest and index alone need "
        f"about {reserve} bytes per volume",
        hint="choose a larger --volume-size",
    )


def pack(options: PackOptions) -> PackResult:
    with full_disk_named(options.out, by_file=True):  # wherever it strikes: named, never a traceback
        return _pack(options)


def _pack(options: PackOptions) -> PackResult:
    loaded = _load(options)
    _refuse_out_in_sources(loaded.spec, options.out)
    with _locked_out(options.out) as state:
        finished = (options.out / layout.volume_name(1) / layout.MANIFEST).is_file()
        stager = _stager(loaded, options)
        try:
            assembled = _assemble(loaded, options, state, stager)
            return _write(loaded, assembled, options, state, earlier_finished=finished)
        finally:
            if stager is not None:
                stager.discard()


def _stager(loaded: _Loaded, options: PackOptions) -> Stager | None:
    """Copy files into the bundle as they are hashed, unless most of them may never be written raw
    (``--compress`` reads the source to compress it; ``--base`` skips what the other side holds)."""
    if options.compress != "none" or loaded.base is not None:
        return None
    largest = UNLIMITED if options.volume_size is None else options.volume_size - 4096  # larger: split
    return Stager(
        options.out / layout.volume_name(1) / layout.BLOBS_DIR,
        chunk_size=options.chunk_size,
        largest=largest,
        disk=options.disk,
    )


def _load(options: PackOptions) -> _Loaded:
    """The spec, the key, and the base (``--base``): everything read before the output is touched."""
    spec = load_spec(options.spec_path)
    key = load_private_key(options.sign_key) if options.sign_key is not None else None
    base = None
    if options.base is not None:
        from airlock.bundle.staging.delta import load_base

        base = load_base(options.base, list(options.trust))
    warnings: list[str] = list(base.notes) if base is not None else []
    if key is None:
        warnings.append(
            "the bundle is not signed (--sign KEY): the other side can check it only with --allow-unsigned"
        )
    return _Loaded(spec, key, base, warnings)


def _assemble(loaded: _Loaded, options: PackOptions, state: Path, stager: Stager | None) -> _Assembled:
    """Collect the sources, check and hash them, compress what pays, and list every blob."""
    collected = collect(
        loaded.spec,
        CollectOptions(
            work_dir=state,
            allow_pickle=options.allow_pickle,
            hf_endpoint=options.hf_endpoint,
            hf_cache=options.hf_cache,
            hf_token=options.hf_token,
            pip_python=options.pip_python,
            workers=options.workers,
            platform=options.platform,
            image_cache=options.image_cache,
            spec_dir=options.spec_path.parent,
            progress=options.progress,
        ),
    )
    if not collected:
        raise BundleError(f"{options.spec_path}: nothing to pack (no local or hub models, wheels or files)")
    hashes = hash_files(
        (ToHash(f.origin, f.expected_sha256, f"{c.name}/{f.path}") for c in collected for f in c.files),
        HashCache(state / layout.PACK_HASH_CACHE),
        workers=options.workers,
        progress=options.progress,
        stager=stager,
    )
    artifacts, origins = _artifacts(collected, hashes)
    base = loaded.base
    skip = base.blobs if base is not None else frozenset()
    # Image layers that come compressed (gzip, zstd): compressing them again costs time, saves nothing.
    packed = {f.expected_sha256 for c in collected for f in c.files if f.compressed}
    encoded = _encode(
        [sha for sha in origins if sha not in skip and sha not in packed], origins, state, options
    )
    blobs, sources, items = _blobs(origins, skip, encoded, stager)
    created = options.created or utc_now()
    made = _bootstrap(loaded, options, state) if carries_airlock(loaded.spec, options) else None
    return _Assembled(
        spec=loaded.spec,
        artifacts=artifacts,
        blobs=blobs,
        sources=sources,
        items=items,
        base=BaseRef(kind=base.kind, sha256=base.sha256) if base is not None else None,
        created=created,
        sbom=_sbom(artifacts, collected, created, made),
        bootstrap=made,
    )


def _write(
    loaded: _Loaded, assembled: _Assembled, options: PackOptions, state: Path, *, earlier_finished: bool
) -> PackResult:
    """Place the blobs, write them and the parity volumes, then the signed manifest on every volume."""
    parity_block = _parity_block(options)
    made = assembled.bootstrap
    placements = _plan(
        assembled.items, assembled.blobs, assembled.draft(options), len(assembled.sbom), options, parity_block,
        bootstrap_size=made.size if made is not None else 0,
    )  # fmt: skip
    parity_count = _parity_count(len(placements), options) if parity_block else 0
    writer = VolumeWriter(
        options.out,
        state / layout.PACK_JOURNAL,
        chunk_size=options.chunk_size,
        workers=options.workers,
        disk=options.disk,
        progress=options.progress,
    )
    written = writer.write(placements, assembled.sources, keep_volumes=len(placements) + parity_count)
    volumes = [Volume(number=n, entries=written.volumes[n]) for n in sorted(written.volumes)]
    parity_model: Parity | None = None
    if parity_block:
        from airlock.bundle.staging.write_parity import write_parity

        parity_model, parity_volumes = write_parity(
            options.out, volumes, parity_count, parity_block,
            chunk_size=options.chunk_size, disk=options.disk, progress=options.progress,
        )  # fmt: skip
        volumes += parity_volumes

    manifest = assembled.manifest(options, volumes, parity_model)
    key = loaded.key
    signature = sign(key, manifest.to_bytes(), MANIFEST_CONTEXT) if key is not None else None
    packed = _write_metadata(options, manifest, signature, assembled.sbom, made)
    blobs = assembled.blobs.values()
    return PackResult(
        out=options.out,
        bundle=manifest.digest(),
        manifest=manifest,
        volumes=packed,
        signed_by=key_id(key.public_key()) if key is not None else None,
        files=sum(len(a.files) for a in assembled.artifacts),
        blobs=len(blobs),
        carried_bytes=sum(b.size for b in blobs if b.carried),
        stored_bytes=manifest.total_stored_bytes(),
        skipped_blobs=sum(1 for b in blobs if not b.carried),
        skipped_bytes=sum(b.size for b in blobs if not b.carried),
        written_bytes=written.written,
        kept_bytes=written.kept,
        warnings=loaded.warnings,
        earlier_finished=earlier_finished,
        bootstrap=manifest.bootstrap,
    )


def _blobs(
    origins: dict[str, _Origin],
    skip: frozenset[str],
    encoded: dict[str, Encoded],
    stager: Stager | None = None,
) -> tuple[dict[str, Blob], dict[str, StoredSource], list[Item]]:
    """Every distinct blob, where its stored bytes are read from (or were copied to while hashing),
    and what the planner places."""
    blobs: dict[str, Blob] = {}
    sources: dict[str, StoredSource] = {}
    items: list[Item] = []
    for sha, origin in origins.items():
        if sha in skip:
            blobs[sha] = Blob(sha256=sha, size=origin.size, carried=False)
            continue
        enc = encoded.get(sha) or Encoded(Blob(sha256=sha, size=origin.size), origin.path, ())
        blobs[sha] = enc.blob
        compressed = enc.blob.encoding == "zstd"
        stamp = None if compressed else origin.hashed.stamp
        staged = stager.take(origin.path) if stager is not None and not compressed else None
        sources[sha] = StoredSource(
            path=enc.path, compressed=compressed, stamp=stamp, name=origin.name, staged=staged
        )
        items.append(Item(sha, enc.blob.stored_size, raw_size=origin.size, frames=enc.frames))
    return blobs, sources, items


def _parity_block(options: PackOptions) -> int | None:
    if options.parity_percent <= 0:
        return None
    from airlock.bundle.format.parity import choose_block

    return choose_block(options.volume_size)


def _parity_count(data_volumes: int, options: PackOptions) -> int:
    from airlock.bundle.format.parity import parity_volume_count

    return parity_volume_count(data_volumes, options.parity_percent)


def _refuse_out_in_sources(spec: Spec, out: Path) -> None:
    """An --out inside a model or file folder would pack the bundle into itself: refuse before writing."""
    out = out.resolve()
    folders = [(f"model {m.name!r}", m.path) for m in spec.models if m.path is not None]
    folders += [(f"files: {f.path}", f.path) for f in spec.files]
    for what, folder in folders:
        if out.is_relative_to(folder.resolve()):
            raise BundleError(
                f"{what}: the output folder {out} is inside {folder}",
                hint="choose an --out folder outside the model and file folders",
            )


def _write_metadata(
    options: PackOptions, manifest: Manifest, signature: bytes | None, sbom: bytes, made: MadeBootstrap | None
) -> list[PackedVolume]:
    """The first volume's bootstrap folder, each volume's SBOM, index and signature, then every manifest
    last: a volume with a manifest belongs to a finished bundle. If anything fails, the manifests written
    are removed again."""
    data, bundle = manifest.to_bytes(), manifest.digest()
    roots = [options.out / v.name for v in manifest.volumes]
    written: list[Path] = []
    if made is not None:
        _write_bootstrap(roots[0] / layout.BOOTSTRAP_DIR, made, options.disk)
    try:
        for volume, root in zip(manifest.volumes, roots, strict=True):
            root.mkdir(parents=True, exist_ok=True)
            write_atomic(root / layout.SBOM, sbom, disk=options.disk)
            write_atomic(
                root / layout.VOLUME_INDEX,
                VolumeIndex.of(manifest, bundle, volume).to_bytes(),
                disk=options.disk,
            )
            if signature is not None:
                write_atomic(root / layout.SIGNATURE, signature, disk=options.disk)
        for root in roots:
            write_atomic(root / layout.MANIFEST, data, disk=options.disk)
            written.append(root / layout.MANIFEST)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    packed = []
    for volume, root in zip(manifest.volumes, roots, strict=True):
        used = _volume_bytes(root)
        if options.volume_size is not None and used > options.volume_size:
            raise BundleError(
                f"{root}: {used} bytes exceed the volume size {options.volume_size} (a bug in airlock)"
            )
        packed.append(PackedVolume(volume.number, root, volume.role, used, len(volume.entries)))
    return packed


def _write_bootstrap(folder: Path, made: MadeBootstrap, disk: Disk) -> None:
    """``bootstrap/``: exactly the files the manifest lists (anything else there is removed)."""
    listed = {f.path for f in made.record.files}
    if folder.is_dir():
        for old in folder.iterdir():
            if old.name not in listed:
                old.unlink()
    for name, path in made.wheels.items():
        write_atomic(folder / name, path.read_bytes(), disk=disk)
    for name, text in made.texts.items():
        mode = 0o755 if name == layout.BOOTSTRAP_SCRIPT else 0o644
        write_atomic(folder / name, text, disk=disk, mode=mode)


def carries_airlock(spec: Spec, options: PackOptions) -> bool:
    """Whether pack carries airlock itself: --with-airlock as given; by default, when the spec's wheels
    name a target platform (the other side is then another machine, likely without airlock)."""
    if options.with_airlock is not None:
        return options.with_airlock
    return spec.wheels is not None and bool(spec.wheels.platforms)


def _bootstrap(loaded: _Loaded, options: PackOptions, state: Path) -> MadeBootstrap | None:
    """airlock's wheel and its dependencies for the spec's wheels target, as the bootstrap folder.

    Asked for (--with-airlock), a failure stops pack; on by default, it is a warning and the bundle
    goes without airlock.
    """
    from airlock.bundle.staging.bootstrap import make_bootstrap
    from airlock.bundle.staging.sources.airlock_self import SelfOptions, collect_airlock
    from airlock.settings import Settings
    from airlock.spec import WheelsSpec

    try:
        got = collect_airlock(
            SelfOptions(
                work_dir=state,
                cache=options.bootstrap_cache or Settings.from_env().cache / "bootstrap",
                target=loaded.spec.wheels or WheelsSpec(),
                wheel=options.airlock_wheel,
                python=options.pip_python,
            )
        )
    except SourceError as exc:
        if options.with_airlock:
            raise
        loaded.warnings.append(
            f"airlock itself is not carried (on by default for a wheels platform): {exc.message}; "
            "--with-airlock makes this an error, --without-airlock leaves it out quietly"
        )
        return None
    return make_bootstrap(
        got.wheels, target=got.target, python_version=got.python_version, airlock_version=__version__
    )


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _volume_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _sbom(
    artifacts: list[Artifact], collected: list[Collected], created: str, made: MadeBootstrap | None
) -> bytes:
    from airlock.bundle.staging.sbom import build_sbom

    wheels = made.wheels if made is not None else {}
    bootstrap = [(f, wheels[f.path]) for f in made.record.files if f.path in wheels] if made else []
    return build_sbom(artifacts, collected, created=created, bootstrap=bootstrap)


def _encode(
    carried: list[str], origins: dict[str, _Origin], state: Path, options: PackOptions
) -> dict[str, Encoded]:
    """Compress what pays (``--compress``); blobs left out of the result are carried raw."""
    if options.compress == "none":
        return {}
    from airlock.bundle.format.compress import RawBlob, encode_blobs

    return encode_blobs(
        [RawBlob(sha, origins[sha].path, origins[sha].size, origins[sha].name) for sha in carried],
        state / layout.PACK_TMP,
        mode=options.compress,
        workers=options.workers,
        disk=options.disk,
        progress=options.progress,
        frame=options.compress_frame,
    )
