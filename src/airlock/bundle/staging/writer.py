"""Writing planned entries onto volumes, resumably.

Each entry (a blob or a part of one) is copied to a temp name in its volume, hashed as it is copied
(the whole entry and each ``chunk_size`` piece), fsynced and renamed into place; then one line is
appended to the journal (``journal.jsonl`` in pack's state folder, ``.OUT.airlock-pack/`` beside
OUT). After a crash (even ``kill -9``) a re-run finds the journal's entries, re-hashes the files it
names and keeps those that still match; the rest is written again.

A whole raw blob that hashing already copied into the bundle (:class:`~.hashing.Staged`: fsynced,
its chunk hashes known) is not read again: it is renamed into its place and journaled.

Example::

    writer = VolumeWriter(out, journal_path, chunk_size=64 << 20, workers=2)
    written = writer.write(plan, sources)
    written.volumes   # {volume number: [Entry, ...]}
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from airlock.bundle.format import layout
from airlock.bundle.format.manifest import Entry, chunk_spans
from airlock.bundle.staging.hashing import Staged, Stamp
from airlock.bundle.staging.volumes import Placement
from airlock.common.fileio import (
    DEFAULT_DISK,
    Disk,
    copy_range,
    fsync_dir,
    full_disk_named,
    hash_range,
    is_disk_full,
    is_temp_name,
    temp_name,
)
from airlock.common.progress import Meter, ProgressSink
from airlock.common.threads import run_jobs
from airlock.errors import BundleError, IntegrityError, SourceError


@dataclass(frozen=True)
class StoredSource:
    """Where a blob's stored bytes are read from while packing."""

    path: Path
    compressed: bool
    stamp: Stamp | None = None  # raw sources: must not change while packing
    name: str = ""  # for errors: the first logical file with this content
    staged: Staged | None = None  # already copied into the bundle while it was hashed


@dataclass(frozen=True)
class Job:
    volume: int
    placement: Placement
    path: str  # inside the volume

    def final(self, out: Path) -> Path:
        return out / layout.volume_name(self.volume) / self.path


@dataclass(frozen=True)
class Written:
    volumes: dict[int, list[Entry]]  # volume number -> its entries, in plan order
    written: int  # bytes written by this run
    kept: int  # bytes an earlier run wrote (interrupted or not) that still hash right


@dataclass(frozen=True)
class JournalRecord:
    """One line of the journal: an entry written whole, as planned and as hashed."""

    volume: int
    path: str
    blob: str
    part: int | None
    offset: int
    length: int
    stored_size: int
    stored_sha256: str | None
    chunks: list[str]

    @classmethod
    def of(cls, job: Job, entry: Entry) -> JournalRecord:
        p = job.placement
        return cls(
            job.volume, job.path, p.blob, p.part, p.offset, p.length, p.stored_size,
            entry.stored_sha256, entry.chunks,
        )  # fmt: skip

    @classmethod
    def parse(cls, line: str) -> JournalRecord:
        rec = json.loads(line)
        return cls(
            volume=int(rec["volume"]),
            path=str(rec["path"]),
            blob=rec["blob"],
            part=rec["part"],
            offset=rec["offset"],
            length=rec["length"],
            stored_size=rec["stored_size"],
            stored_sha256=rec.get("stored_sha256"),
            chunks=list(rec.get("chunks") or []),
        )

    def to_line(self) -> bytes:
        return (json.dumps(asdict(self), separators=(",", ":")) + "\n").encode()

    def matches(self, p: Placement) -> bool:
        """Was this entry written for the same placement (the same bytes of the same blob)?"""
        return (self.blob, self.part, self.offset, self.length, self.stored_size) == (
            p.blob, p.part, p.offset, p.length, p.stored_size,
        )  # fmt: skip

    @property
    def hashes(self) -> list[str | None]:
        """What its pieces hashed to: each chunk's, or the one whole entry's."""
        return list(self.chunks) or [self.stored_sha256]


def entry_path(p: Placement, compressed: bool) -> str:
    return layout.blob_path(p.blob, compressed=compressed, part=p.part)


def _pieces(size: int, chunk_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each chunk of an entry; one piece if it is no larger than a chunk."""
    return chunk_spans(size, chunk_size) or [(0, size)]


def _entry(job: Job, whole: str | None, chunks: list[str], chunk_size: int) -> Entry:
    p = job.placement
    return Entry(
        path=job.path,
        blob=p.blob,
        part=p.part,
        offset=p.offset,
        length=p.length,
        stored_size=p.stored_size,
        stored_sha256=whole,
        chunks=chunks if chunk_spans(p.stored_size, chunk_size) else [],
    )


class _EntryCopy:
    """One entry being copied from its source to a temp name in its volume, then renamed into place."""

    def __init__(self, job: Job, source: StoredSource, final: Path, *, chunk_size: int, disk: Disk) -> None:
        self.job = job
        self.source = source
        self.final = final
        self.tmp = final.with_name(temp_name(final.name))
        self.chunk_size = chunk_size
        self.disk = disk
        self.fd = -1

    def start(self, meter: Meter) -> list[Callable[[], str]]:
        """Open the temp file; one task per chunk, each copying and hashing its piece."""
        self._check_unchanged("since it was hashed")
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        p = self.job.placement
        return [partial(self._piece, off, n, meter) for off, n in _pieces(p.stored_size, self.chunk_size)]

    def _piece(self, off: int, n: int, meter: Meter) -> str:
        p = self.job.placement
        with full_disk_named(self.final, needed=p.stored_size):
            return copy_range(
                self.source.path, p.stored_offset + off, n, self.fd, off, disk=self.disk, on_bytes=meter
            )

    def abort(self) -> None:
        self._close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()

    def finish(self, outcomes: list[str | BaseException]) -> Entry:
        """Fsync, check the source did not change and a whole raw blob hashed to its name, rename."""
        try:
            try:
                self._raise_first(outcomes)
                os.fsync(self.fd)
            finally:
                self._close()
            self._check_unchanged("while it was copied")
            hashes = [str(o) for o in outcomes]
            whole = self._whole(hashes)
            os.replace(self.tmp, self.final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
        return _entry(self.job, whole, hashes, self.chunk_size)

    def _raise_first(self, outcomes: list[str | BaseException]) -> None:
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if not errors:
            return
        if isinstance(errors[0], EOFError):
            raise SourceError(
                f"{self.source.name}: {self.source.path} is shorter than when it was hashed"
            ) from errors[0]
        raise errors[0]

    def _whole(self, hashes: list[str]) -> str | None:
        """The entry's own SHA-256 when it is one piece; a whole raw blob must hash to its name."""
        p, source = self.job.placement, self.source
        whole: str | None = hashes[0] if len(hashes) == 1 else None
        if source.compressed or p.part is not None:
            return whole
        if whole is not None and whole != p.blob:
            raise IntegrityError(
                f"{source.name}: {source.path} read back as sha256 {whole[:12]}..., not {p.blob[:12]}...",
                hint="the file changed or the disk returned bad data; run pack again",
            )
        return p.blob  # a whole raw blob is stored under its own hash

    def _check_unchanged(self, when: str) -> None:
        source = self.source
        if source.stamp is not None and Stamp.of(source.path) != source.stamp:
            raise SourceError(f"{source.name}: {source.path} changed {when}", hint="run pack again")

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class VolumeWriter:
    def __init__(
        self,
        out: Path,
        journal: Path,
        *,
        chunk_size: int,
        workers: int,
        disk: Disk = DEFAULT_DISK,
        progress: ProgressSink | None = None,
    ) -> None:
        self.out = out
        self.journal_path = journal
        self.chunk_size = chunk_size
        self.workers = max(1, workers)
        self.disk = disk
        self.progress = progress
        self._lock = threading.Lock()
        self._journal = self._load_journal()

    # -- journal ---------------------------------------------------------------------------------
    def _load_journal(self) -> dict[tuple[int, str], JournalRecord]:
        records: dict[tuple[int, str], JournalRecord] = {}
        try:
            lines = self.journal_path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return records
        for line in lines:
            try:
                rec = JournalRecord.parse(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash: its entry is simply redone
            records[(rec.volume, rec.path)] = rec
        return records

    def _append(self, rec: JournalRecord) -> None:
        line = rec.to_line()
        with self._lock:
            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- writing ---------------------------------------------------------------------------------
    def write(
        self,
        plan: list[list[Placement]],
        sources: dict[str, StoredSource],
        *,
        keep_volumes: int | None = None,
    ) -> Written:
        """Write every planned entry; volumes past ``keep_volumes`` (default: the plan's) are removed."""
        jobs = [
            Job(number, p, entry_path(p, sources[p.blob].compressed))
            for number, placements in enumerate(plan, start=1)
            for p in placements
        ]
        staged = frozenset(s.staged.path for s in sources.values() if s.staged is not None)
        self.clean(
            plan_paths={(j.volume, j.path) for j in jobs}, volumes=keep_volumes or len(plan), keep=staged
        )
        for number in range(1, len(plan) + 1):
            (self.out / layout.volume_name(number) / layout.BLOBS_DIR).mkdir(parents=True, exist_ok=True)
        meter = Meter(self.progress, "write", sum(j.placement.stored_size for j in jobs))
        results: dict[Job, Entry] = {}
        try:
            kept = self._keep(jobs, meter, results)
            todo = [j for j in jobs if j not in results]
            self._copy(todo, sources, meter, results)
        finally:
            meter.finish()
        by_volume: dict[int, list[Entry]] = {n: [] for n in range(1, len(plan) + 1)}
        for job in jobs:
            by_volume[job.volume].append(results[job])
        for number in by_volume:
            fsync_dir(self.out / layout.volume_name(number) / layout.BLOBS_DIR)
        written = sum(j.placement.stored_size for j in todo)
        return Written(volumes=by_volume, written=written, kept=kept)

    def _keep(self, jobs: list[Job], meter: Meter, results: dict[Job, Entry]) -> int:
        """Re-hash what the journal says an earlier run wrote; keep the entries that still match."""
        candidates = [job for job in jobs if self._journaled(job) is not None]
        kept = 0

        def tasks(job: Job) -> list[Callable[[], str]]:
            final = job.final(self.out)
            return [
                partial(hash_range, final, off, n, on_bytes=meter)
                for off, n in _pieces(job.placement.stored_size, self.chunk_size)
            ]

        def done(job: Job, outcomes: list[str | BaseException]) -> None:
            nonlocal kept
            rec = self._journal[(job.volume, job.path)]
            if any(isinstance(o, BaseException) for o in outcomes):
                return
            hashes = [str(o) for o in outcomes]
            if hashes != rec.hashes:
                return  # damaged since: written again below
            results[job] = _entry(job, rec.stored_sha256 or None, hashes, self.chunk_size)
            kept += job.placement.stored_size

        run_jobs(candidates, tasks=tasks, done=done, workers=self.workers)
        return kept

    def _journaled(self, job: Job) -> JournalRecord | None:
        """The journal's record of ``job``, if the file it names is still there at its size."""
        rec = self._journal.get((job.volume, job.path))
        if rec is None or not rec.matches(job.placement):
            return None
        final = job.final(self.out)
        return rec if final.is_file() and final.stat().st_size == job.placement.stored_size else None

    def _copy(
        self, jobs: list[Job], sources: dict[str, StoredSource], meter: Meter, results: dict[Job, Entry]
    ) -> None:
        """Copy each entry (every chunk on the pool), finish it as soon as its last chunk is in, journal it.

        An entry staged while hashing is renamed into place instead."""
        staged = [(j, s) for j in jobs if (s := self._staged(j, sources[j.placement.blob])) is not None]
        for job, copy in staged:
            final = job.final(self.out)
            os.replace(copy.path, final)
            entry = _entry(job, job.placement.blob, list(copy.chunks), self.chunk_size)
            results[job] = entry
            self._append(JournalRecord.of(job, entry))
            meter(job.placement.stored_size)
        moved = {j for j, _ in staged}
        jobs = [j for j in jobs if j not in moved]
        copies = [
            _EntryCopy(
                j, sources[j.placement.blob], j.final(self.out), chunk_size=self.chunk_size, disk=self.disk
            )
            for j in jobs
        ]

        def done(copy: _EntryCopy, outcomes: list[str | BaseException]) -> None:
            entry = copy.finish(outcomes)
            results[copy.job] = entry
            self._append(JournalRecord.of(copy.job, entry))

        with full_disk_named(self.out, needed=sum(j.placement.stored_size for j in jobs)):
            run_jobs(
                copies,
                tasks=lambda copy: copy.start(meter),
                done=done,
                abort=_EntryCopy.abort,
                workers=self.workers,
                fatal=is_disk_full,
            )

    def _staged(self, job: Job, source: StoredSource) -> Staged | None:
        """The staged copy to rename into ``job``'s place: a whole raw blob, hashed by this chunk size,
        on the same file system."""
        copy = source.staged
        p = job.placement
        if copy is None or source.compressed or p.part is not None or copy.chunk_size != self.chunk_size:
            return None
        try:
            same = os.stat(copy.path).st_dev == os.stat(job.final(self.out).parent).st_dev
        except OSError:
            return None
        return copy if same and os.stat(copy.path).st_size == p.stored_size else None

    # -- cleaning --------------------------------------------------------------------------------
    def clean(
        self, *, plan_paths: set[tuple[int, str]], volumes: int, keep: frozenset[Path] = frozenset()
    ) -> None:
        """Remove what an earlier run left that this plan does not use; refuse to touch foreign files.

        ``keep``: this run's staged files (temp names), left alone."""
        for vol_dir in sorted(self.out.glob(layout.VOLUME_PREFIX + "*")):
            if not vol_dir.is_dir():
                continue
            try:
                number = int(vol_dir.name.removeprefix(layout.VOLUME_PREFIX))
            except ValueError:
                continue
            for path in sorted(vol_dir.rglob("*"), reverse=True):
                rel = path.relative_to(vol_dir).as_posix()
                if path.is_symlink() or path.is_file():
                    ours = (
                        layout.ENTRY_PATH_RE.match(rel)
                        or rel in layout.METADATA_FILES
                        or is_temp_name(path.name)
                    )
                    if not ours:
                        raise BundleError(
                            f"{path}: not a file airlock wrote; refusing to pack over it",
                            hint="choose an empty --out folder",
                        )
                    if (number, rel) not in plan_paths and path not in keep:
                        path.unlink()
                elif path.is_dir() and number > volumes:
                    with contextlib.suppress(OSError):
                        path.rmdir()
            if number > volumes:
                with contextlib.suppress(OSError):
                    vol_dir.rmdir()
