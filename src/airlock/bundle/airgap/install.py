"""``airlock install``: verify a bundle and place it in the model store, straight from its volumes.

1. Before a byte is written: the signature and form of the manifest, the volume indexes, no link
   and no unlisted file on the volumes mounted, every file there of the right size, every blob the
   bundle does not carry (``--base``) already in the store, and room enough on the store's disk.
2. Each blob (or part of one) streams from its volume into ``STORE/.airlock/incoming/<bundle>/``,
   hashed as it goes (chunk by chunk, on every core) and renamed into place only if it matches the
   signed manifest. Parts of a blob split over volumes are written at their offsets in one file:
   no concatenation, no second copy. Blobs the store already holds are not copied again.
3. When every blob is in, the bundle is committed: blobs are hard-linked into the Hugging Face
   layout, new snapshots appear whole (temp name + rename), then ``refs/``, the GGUF links, wheels,
   files, and the store's index. Until then nothing outside ``incoming/`` changes.

Volumes may be mounted one after another: each run installs what is mounted and says which
volumes it still needs (:attr:`InstallResult.needed`); the next run goes on from there.

Example::

    result = install(InstallOptions(VolumeSet([Path("/media/usb")], trust=[Path("site.pub")]),
                                    store=Path("/srv/store")))
    result.complete, result.needed
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from airlock.bundle.airgap.commit import InstalledModel, commit_bundle
from airlock.bundle.airgap.images import ImageTargets, PlacedImage, place_images, record_targets
from airlock.bundle.airgap.verify import check_structure, owners
from airlock.bundle.format.manifest import Blob, Entry, Manifest
from airlock.bundle.format.reader import MountedVolume, VolumeSet
from airlock.common.fileio import (
    Disk,
    copy_range,
    full_disk_named,
    human,
    is_disk_full,
    temp_name,
)
from airlock.common.progress import Meter, ProgressSink
from airlock.common.threads import run_jobs
from airlock.common.words import counted
from airlock.errors import IntegrityError, NoSpaceError, StoreError
from airlock.store.store import Store


@dataclass(frozen=True)
class InstallOptions:
    volumes: VolumeSet
    store: Path
    images: ImageTargets = field(default_factory=ImageTargets)  # where its images go besides the store
    progress: ProgressSink | None = None


@dataclass(frozen=True)
class InstallResult:
    bundle: str
    store: Path
    signed_by: str | None
    complete: bool
    mounted: list[int]
    needed: list[int]  # volumes still to mount (empty when complete)
    copied_bytes: int  # read from the volumes this run
    reused_bytes: int  # already in the store or in incoming/
    models: list[InstalledModel]
    wheels: list[str]
    files: list[str]
    spec_path: Path | None  # the bundle's spec, rewritten to serve from the store
    notes: list[str]
    images: list[PlacedImage] = field(default_factory=list)  # each image and where it was placed


class _Incoming:
    """``STORE/.airlock/incoming/<bundle>/``: verified blobs, and split blobs being assembled."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def done(self, sha: str) -> Path:
        return self.root / sha

    def partial(self, sha: str) -> Path:
        return self.root / f"{sha}.partial"

    def parts_log(self, sha: str) -> Path:
        return self.root / f"{sha}.parts"

    def parts_done(self, sha: str) -> set[int]:
        try:
            text = self.parts_log(sha).read_text()
        except FileNotFoundError:
            return set()
        return {int(x) for x in text.split() if x.isdigit()}

    def record_part(self, sha: str, part: int) -> None:
        with self._lock:
            fd = os.open(self.parts_log(sha), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{part}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)


@dataclass
class _EntryJob:
    volume: MountedVolume
    entry: Entry
    blob: Blob
    dest: Path  # the file written: a temp name (whole blobs) or <sha>.partial (parts)
    final: Path | None  # whole blobs: renamed here when verified
    parts: int = 1  # how many parts the blob has in all
    fd: int = -1
    errors: list[str] = field(default_factory=list)


def _space_check(store: Store, needed: int, disk: Disk) -> None:
    free = disk.free_bytes(store.root)
    if needed > free:
        raise NoSpaceError(
            f"{store.root}: {human(needed)} are needed to install, but only {human(free)} are free",
            hint="free space on the store's disk, or choose another --store",
        )


def install(options: InstallOptions) -> InstallResult:
    with full_disk_named(options.store, by_file=True):  # wherever it strikes: named, never a traceback
        return _install(options)


def _install(options: InstallOptions) -> InstallResult:
    """Check everything before writing, copy what the mounted volumes hold, commit once all is in."""
    opened = options.volumes.open()
    manifest = opened.manifest
    store = Store(options.store.absolute())
    with store.locked():
        db = store.load_db()
        index = store.blob_index(db)
        incoming = _Incoming(store.incoming(opened.bundle))
        present = [opened.volumes[n] for n in sorted(opened.volumes)]
        check_structure(opened, present)  # links, unlisted files, missing or wrong-sized entries
        in_store = {b.sha256 for b in manifest.blobs if store.find_blob(b.sha256, index) is not None}
        _refuse_absent(manifest, in_store, store)
        pending = {b.sha256: b for b in manifest.blobs if b.carried and b.sha256 not in in_store}
        ready = {sha for sha in pending if incoming.done(sha).exists()}
        _space_check(
            store, sum(b.size for sha, b in pending.items() if sha not in ready), options.volumes.disk
        )
        incoming.root.mkdir(parents=True, exist_ok=True)
        jobs = _jobs(manifest, present, pending, ready, incoming)
        copied = _run_jobs(jobs, manifest, incoming, options.volumes)

        missing_blobs = {sha for sha in pending if not incoming.done(sha).exists()}
        reused = sum(b.size for b in manifest.blobs if b.sha256 in in_store)
        if missing_blobs:
            holders = _still_needed(manifest, missing_blobs, incoming, set(opened.volumes))
            return InstallResult(
                bundle=opened.bundle, store=store.root, signed_by=opened.signed_by, complete=False,
                mounted=sorted(opened.volumes), needed=holders, copied_bytes=copied, reused_bytes=reused,
                models=[], wheels=[], files=[], spec_path=None, notes=list(opened.notes),
            )  # fmt: skip
        committed = commit_bundle(store, db, opened, incoming.root, index)
        shutil.rmtree(incoming.root, ignore_errors=True)
        placed = [PlacedImage(i.reference, i.digest) for i in committed.images]
        if committed.images and options.images.any:
            placed = place_images(store, committed.images, options.images, progress=options.progress)
            record_targets(store, placed)
        return InstallResult(
            bundle=opened.bundle, store=store.root, signed_by=opened.signed_by, complete=True,
            mounted=sorted(opened.volumes), needed=[], copied_bytes=copied, reused_bytes=reused,
            models=committed.models,
            wheels=committed.wheels, files=committed.files, spec_path=committed.spec_path,
            notes=list(opened.notes) + committed.notes, images=placed,
        )  # fmt: skip


def _still_needed(manifest: Manifest, missing: set[str], incoming: _Incoming, mounted: set[int]) -> list[int]:
    """The volumes holding an entry of a blob still missing that is not in incoming/ yet: a part that
    an earlier run installed (from a volume mounted then) does not make its volume needed again."""
    needed: set[int] = set()
    for v in manifest.volumes:
        for e in v.entries:
            if e.blob not in missing or v.number in mounted:
                continue
            if e.part is None or e.part not in incoming.parts_done(e.blob):
                needed.add(v.number)
    return sorted(needed)


def _refuse_absent(manifest: Manifest, in_store: set[str], store: Store) -> None:
    """A delta bundle leaves out blobs the store should hold: refuse before writing if it does not."""
    absent = [b for b in manifest.blobs if not b.carried and b.sha256 not in in_store]
    if not absent:
        return
    who = owners(manifest)
    names = [n for b in absent for n in who[b.sha256]]
    raise StoreError(
        f"the bundle does not carry {counted(len(absent), 'file')} that the store {store.root} lacks: "
        + ", ".join(names[:5])
        + (" ..." if len(names) > 5 else ""),
        hint="this is a delta bundle: install the bundle it was made against first",
    )


def _jobs(
    manifest: Manifest,
    present: list[MountedVolume],
    pending: dict[str, Blob],
    ready: set[str],
    incoming: _Incoming,
) -> list[_EntryJob]:
    """The entries on the mounted volumes still to copy: not in the store, not already in incoming/."""
    parts: dict[str, int] = defaultdict(int)
    for v in manifest.volumes:
        for e in v.entries:
            if e.blob is not None:
                parts[e.blob] += 1
    jobs = []
    for volume in present:
        for entry in manifest.volumes[volume.number - 1].entries:
            if entry.blob is None or entry.blob not in pending or entry.blob in ready:
                continue
            if entry.part is not None and entry.part in incoming.parts_done(entry.blob):
                continue
            jobs.append(_job(volume, entry, pending[entry.blob], incoming, parts[entry.blob]))
    return jobs


def _job(volume: MountedVolume, entry: Entry, blob: Blob, incoming: _Incoming, parts: int) -> _EntryJob:
    if entry.part is None:
        final = incoming.done(blob.sha256)
        return _EntryJob(volume, entry, blob, final.with_name(temp_name(final.name)), final)
    return _EntryJob(volume, entry, blob, incoming.partial(blob.sha256), None, parts)


def _run_jobs(jobs: list[_EntryJob], manifest: Manifest, incoming: _Incoming, options: VolumeSet) -> int:
    """Copy and verify every job's entry; raise IntegrityError naming every corrupt file at the end.

    Each entry is finished (fsynced and renamed, or its part recorded) as soon as its last chunk is
    verified, so an interrupted run keeps everything it completed.
    """
    meter = Meter(options.progress, "install", sum(j.entry.stored_size for j in jobs))

    def tasks(job: _EntryJob) -> list[Callable[[], None]]:
        _open_dest(job)
        return _tasks(job, manifest.chunk_size, options, meter)

    def done(job: _EntryJob, outcomes: list[BaseException | None]) -> None:
        job.errors += [str(o) for o in outcomes if isinstance(o, BaseException)]
        _finish(job, incoming, ok=not job.errors)

    def abort(job: _EntryJob) -> None:
        _finish(job, incoming, ok=False)

    try:
        with full_disk_named(incoming.root, needed=sum(j.entry.stored_size for j in jobs)):
            run_jobs(jobs, tasks=tasks, done=done, abort=abort, workers=options.workers, fatal=is_disk_full)
    finally:
        meter.finish()
        for job in jobs:
            if job.final is not None:
                with contextlib.suppress(FileNotFoundError):
                    job.dest.unlink()
    who = owners(manifest)
    problems = [
        f"volume {job.volume.number}: {job.entry.path}: {job.errors[0]} (holds {', '.join(who.get(job.blob.sha256, [])[:3])})"
        for job in jobs
        if job.errors
    ]
    if problems:
        raise IntegrityError(
            problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems=tuple(problems),
            hint="nothing was installed; what verified is kept in incoming/ for the next run",
        )
    return sum(j.entry.stored_size for j in jobs)


def _open_dest(job: _EntryJob) -> None:
    with full_disk_named(job.dest, needed=job.entry.stored_size):
        job.fd = os.open(job.dest, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(job.fd).st_size < job.blob.size:
            os.ftruncate(job.fd, job.blob.size if job.entry.part is not None else 0)


def _tasks(job: _EntryJob, chunk: int, options: VolumeSet, meter: Meter) -> list[Callable[[], None]]:
    entry, src = job.entry, job.volume.root / job.entry.path
    if job.blob.encoding == "zstd":
        from airlock.bundle.format.compress import decode_entry

        return [
            lambda: decode_entry(src, entry, job.blob, job.fd, chunk=chunk, disk=options.disk, on_bytes=meter)
        ]
    pieces = entry.pieces(chunk)

    def task(off: int, length: int, expected: str) -> Callable[[], None]:
        def run() -> None:
            sha = copy_range(
                src, off, length, job.fd, entry.offset + off, disk=options.disk, on_bytes=meter, follow=False
            )
            if sha != expected:
                where = f" (bytes {off}-{off + length})" if entry.chunks else ""
                raise IntegrityError(f"hash mismatch{where}")

        return run

    return [task(off, length, sha) for off, length, sha in pieces]


def _finish(job: _EntryJob, incoming: _Incoming, *, ok: bool) -> None:
    if job.fd >= 0:
        if ok:
            os.fsync(job.fd)
        os.close(job.fd)
        job.fd = -1
    if not ok:
        return
    sha = job.blob.sha256
    if job.final is not None:
        os.replace(job.dest, job.final)
        return
    assert job.entry.part is not None
    incoming.record_part(sha, job.entry.part)
    if len(incoming.parts_done(sha)) == job.parts:
        os.replace(incoming.partial(sha), incoming.done(sha))
        with contextlib.suppress(FileNotFoundError):
            incoming.parts_log(sha).unlink()
