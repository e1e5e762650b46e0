"""Writing planned entries onto volumes, resumably.

Each entry (a blob or a part of one) is copied to a temp name in its volume, hashed as it is copied
(the whole entry and each ``chunk_size`` piece), fsynced and renamed into place; then one line is
appended to the journal (``.airlock-pack/journal.jsonl``). After a crash (even ``kill -9``) a re-run
finds the journal's entries, re-hashes the files it names and keeps those that still match; the
rest is written again.

Example::

    writer = VolumeWriter(out, journal_path, chunk_size=64 << 20, workers=2)
    entries = writer.write(plan, sources)   # {volume number: [Entry, ...]}
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from airlock.bundle.format import layout
from airlock.bundle.format.manifest import Entry, chunk_spans
from airlock.bundle.staging.hashing import Stamp
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


@dataclass(frozen=True)
class Job:
    volume: int
    placement: Placement
    path: str  # inside the volume


@dataclass(frozen=True)
class WriteStats:
    written: int
    kept: int


def entry_path(p: Placement, compressed: bool) -> str:
    return layout.blob_path(p.blob, compressed=compressed, part=p.part)


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
    def _load_journal(self) -> dict[tuple[int, str], dict[str, object]]:
        records: dict[tuple[int, str], dict[str, object]] = {}
        try:
            lines = self.journal_path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return records
        for line in lines:
            try:
                rec = json.loads(line)
                records[(int(rec["volume"]), str(rec["path"]))] = rec
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash: its entry is simply redone
        return records

    def _append(self, rec: dict[str, object]) -> None:
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
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
    ) -> tuple[dict[int, list[Entry]], WriteStats]:
        """Write every planned entry; volumes past ``keep_volumes`` (default: the plan's) are removed."""
        jobs = [
            Job(number, p, entry_path(p, sources[p.blob].compressed))
            for number, placements in enumerate(plan, start=1)
            for p in placements
        ]
        self.clean(plan_paths={(j.volume, j.path) for j in jobs}, volumes=keep_volumes or len(plan))
        for number in range(1, len(plan) + 1):
            (self.out / layout.volume_name(number) / layout.BLOBS_DIR).mkdir(parents=True, exist_ok=True)
        meter = Meter(self.progress, "write", sum(j.placement.stored_size for j in jobs))
        results: dict[tuple[int, str], Entry] = {}
        try:
            kept = self._keep(jobs, meter, results)
            todo = [j for j in jobs if (j.volume, j.path) not in results]
            self._copy(todo, sources, meter, results)
        finally:
            meter.finish()
        by_volume: dict[int, list[Entry]] = {n: [] for n in range(1, len(plan) + 1)}
        for job in jobs:
            by_volume[job.volume].append(results[(job.volume, job.path)])
        for number in by_volume:
            fsync_dir(self.out / layout.volume_name(number) / layout.BLOBS_DIR)
        written = sum(j.placement.stored_size for j in todo)
        return by_volume, WriteStats(written=written, kept=kept)

    def _pieces(self, size: int) -> list[tuple[int, int]]:
        """(offset, length) of each chunk of an entry; one piece if it is no larger than a chunk."""
        return chunk_spans(size, self.chunk_size) or [(0, size)]

    def _entry(self, job: Job, whole: str | None, chunks: list[str]) -> Entry:
        p = job.placement
        return Entry(
            path=job.path,
            blob=p.blob,
            part=p.part,
            offset=p.offset,
            length=p.length,
            stored_size=p.stored_size,
            stored_sha256=whole,
            chunks=chunks if chunk_spans(p.stored_size, self.chunk_size) else [],
        )

    def _keep(self, jobs: list[Job], meter: Meter, results: dict[tuple[int, str], Entry]) -> int:
        """Re-hash what the journal says an earlier run wrote; keep the entries that still match."""
        candidates = []
        for job in jobs:
            rec = self._journal.get((job.volume, job.path))
            p = job.placement
            final = self.out / layout.volume_name(job.volume) / job.path
            same = rec is not None and [rec.get(k) for k in ("blob", "part", "offset", "length", "stored_size")] == [
                p.blob, p.part, p.offset, p.length, p.stored_size,
            ]  # fmt: skip
            if same and final.is_file() and final.stat().st_size == p.stored_size:
                candidates.append(job)
        kept = 0

        def tasks(job: Job) -> list[Callable[[], str]]:
            final = self.out / layout.volume_name(job.volume) / job.path
            return [
                partial(hash_range, final, off, n, on_bytes=meter)
                for off, n in self._pieces(job.placement.stored_size)
            ]

        def done(job: Job, outcomes: list[str | BaseException]) -> None:
            nonlocal kept
            rec = self._journal[(job.volume, job.path)]
            if any(isinstance(o, BaseException) for o in outcomes):
                return
            hashes = [str(o) for o in outcomes]
            recorded = rec.get("chunks") or [rec.get("stored_sha256")]
            if hashes != recorded:
                return  # damaged since: written again below
            whole = rec.get("stored_sha256")
            results[(job.volume, job.path)] = self._entry(job, str(whole) if whole else None, hashes)
            kept += job.placement.stored_size

        run_jobs(candidates, tasks=tasks, done=done, workers=self.workers)
        return kept

    def _copy(
        self,
        jobs: list[Job],
        sources: dict[str, StoredSource],
        meter: Meter,
        results: dict[tuple[int, str], Entry],
    ) -> None:
        open_files: dict[int, tuple[Path, int]] = {}

        def tasks(job: Job) -> list[Callable[[], str]]:
            p, source = job.placement, sources[job.placement.blob]
            if source.stamp is not None and Stamp.of(source.path) != source.stamp:
                raise SourceError(
                    f"{source.name}: {source.path} changed since it was hashed", hint="run pack again"
                )
            final = self.out / layout.volume_name(job.volume) / job.path
            tmp = final.with_name(temp_name(final.name))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            open_files[id(job)] = (tmp, fd)

            def piece(off: int, n: int) -> str:
                with full_disk_named(final, needed=p.stored_size):
                    return copy_range(
                        source.path, p.stored_offset + off, n, fd, off, disk=self.disk, on_bytes=meter
                    )

            return [partial(piece, off, n) for off, n in self._pieces(p.stored_size)]

        def abort(job: Job) -> None:
            tmp, fd = open_files.pop(id(job))
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

        def done(job: Job, outcomes: list[str | BaseException]) -> None:
            p, source = job.placement, sources[job.placement.blob]
            final = self.out / layout.volume_name(job.volume) / job.path
            tmp, fd = open_files.pop(id(job))
            try:
                try:
                    errors = [o for o in outcomes if isinstance(o, BaseException)]
                    if errors:
                        if isinstance(errors[0], EOFError):
                            raise SourceError(
                                f"{source.name}: {source.path} is shorter than when it was hashed"
                            ) from errors[0]
                        raise errors[0]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if source.stamp is not None and Stamp.of(source.path) != source.stamp:
                    raise SourceError(
                        f"{source.name}: {source.path} changed while it was copied", hint="run pack again"
                    )
                hashes = [str(o) for o in outcomes]
                whole: str | None = hashes[0] if len(hashes) == 1 else None
                if not source.compressed and p.part is None:
                    if whole is not None and whole != p.blob:
                        raise IntegrityError(
                            f"{source.name}: {source.path} read back as sha256 {whole[:12]}..., not {p.blob[:12]}...",
                            hint="the file changed or the disk returned bad data; run pack again",
                        )
                    whole = p.blob  # a whole raw blob is stored under its own hash
                os.replace(tmp, final)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            entry = self._entry(job, whole, hashes)
            results[(job.volume, job.path)] = entry
            self._append(
                {
                    "volume": job.volume, "path": job.path, "blob": p.blob, "part": p.part, "offset": p.offset,
                    "length": p.length, "stored_size": p.stored_size, "stored_sha256": whole,
                    "chunks": entry.chunks,
                }
            )  # fmt: skip

        with full_disk_named(self.out, needed=sum(j.placement.stored_size for j in jobs)):
            run_jobs(jobs, tasks=tasks, done=done, abort=abort, workers=self.workers, fatal=is_disk_full)

    # -- cleaning --------------------------------------------------------------------------------
    def clean(self, *, plan_paths: set[tuple[int, str]], volumes: int) -> None:
        """Remove what an earlier run left that this plan does not use; refuse to touch foreign files."""
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
                    if (number, rel) not in plan_paths:
                        path.unlink()
                elif path.is_dir() and number > volumes:
                    with contextlib.suppress(OSError):
                        path.rmdir()
            if number > volumes:
                with contextlib.suppress(OSError):
                    vol_dir.rmdir()
