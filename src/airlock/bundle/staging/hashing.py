"""Hashing the files to pack, in parallel, with a cache so a re-run does not hash them again.

The cache (``hashes.json`` in ``.OUT.airlock-pack/``, beside OUT) keys each file by its absolute path and trusts a hash only
while the file's size, modification time, change time and inode are unchanged (what rsync and make
rely on). Files are hashed on ``workers`` threads (``hashlib`` releases the GIL).

With a :class:`Stager`, a file is copied into the bundle in the same read that hashes it (pack reads
each byte once): its bytes go to a temp name in the first volume's blob folder while its SHA-256 and
its chunk hashes are computed, and the writer later renames it into the place the planner gives it.
Only files that cannot hold the same content as another are staged (their size, or their first and
last bytes, differ from every other file's), so two files with the same content are never both
written; content addressing still decides what is carried.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from airlock.common.fileio import (
    DEFAULT_DISK,
    Disk,
    FileDigest,
    OnBytes,
    full_disk_named,
    hash_file,
    read_ranges,
    temp_name,
    write_atomic,
)
from airlock.common.progress import Meter, ProgressSink
from airlock.errors import BundleError, IntegrityError, SourceError


@dataclass(frozen=True)
class Stamp:
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int

    @classmethod
    def of(cls, path: Path) -> Stamp:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class HashCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, list[int | str]] = {}
        self._dirty = False
        self._saved = time.monotonic()
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                self._entries = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 5}
        except (OSError, ValueError):
            pass

    def get(self, origin: Path, stamp: Stamp) -> str | None:
        with self._lock:
            entry = self._entries.get(str(origin))
        if entry is None or entry[:4] != [stamp.size, stamp.mtime_ns, stamp.ctime_ns, stamp.ino]:
            return None
        return str(entry[4])

    def put(self, origin: Path, stamp: Stamp, sha256: str) -> None:
        with self._lock:
            self._entries[str(origin)] = [stamp.size, stamp.mtime_ns, stamp.ctime_ns, stamp.ino, sha256]
            self._dirty = True
            due = time.monotonic() - self._saved > 10
        if due:
            self.save()

    def save(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            data = json.dumps(self._entries, separators=(",", ":")).encode()
            self._dirty = False
            self._saved = time.monotonic()
        write_atomic(self.path, data)


@dataclass(frozen=True)
class Hashed:
    sha256: str
    stamp: Stamp


@dataclass(frozen=True)
class Staged:
    """A file's bytes already copied into the bundle (a temp name), hashed as they were copied."""

    path: Path
    chunk_size: int
    chunks: tuple[str, ...]  # the SHA-256 of each ``chunk_size`` piece (one piece when no larger)


_RING = 8  # read buffers in turn: the chunk hashes may lag the whole hash by up to 7 buffers (7 MiB)


class _Pieces:
    """The SHA-256 of each ``chunk_size`` piece of a stream fed in buffers of any size."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.hashes: list[str] = []
        self._piece = hashlib.sha256()
        self._filled = 0

    def update(self, data: memoryview) -> None:
        while data:
            n = min(len(data), self.chunk_size - self._filled)
            self._piece.update(data[:n])
            self._filled += n
            data = data[n:]
            if self._filled == self.chunk_size:
                self.hashes.append(self._piece.hexdigest())
                self._piece, self._filled = hashlib.sha256(), 0

    def finish(self) -> tuple[str, ...]:
        """Every piece's hash: the last one short, and one (of nothing) for an empty stream."""
        if self._filled or not self.hashes:
            self.hashes.append(self._piece.hexdigest())
            self._piece, self._filled = hashlib.sha256(), 0
        return tuple(self.hashes)


class _WriteFailed(Exception):
    """A write into the bundle failed (not a read of the source): carries the error to raise."""

    def __init__(self, error: BundleError) -> None:
        self.error = error


class Stager:
    """Copies files into ``folder`` while they are hashed, so pack reads each byte once.

    ``largest``: files larger than this are not staged (they would be split across volumes, and a
    part is hashed on its own). The writer takes a staged file (:meth:`take`) and renames it into
    place; :meth:`discard` removes every staged file no one took (an error, or an entry kept from an
    earlier run).
    """

    def __init__(self, folder: Path, *, chunk_size: int, largest: int, disk: Disk = DEFAULT_DISK) -> None:
        self.folder = folder
        self.chunk_size = chunk_size
        self.largest = largest
        self.disk = disk
        self._lock = threading.Lock()
        self._temps: set[Path] = set()
        self._staged: dict[Path, Staged] = {}

    def wants(self, size: int) -> bool:
        return size <= self.largest

    def copy(
        self, origin: Path, *, on_bytes: OnBytes | None = None, spare_core: bool = False
    ) -> tuple[FileDigest, Staged]:
        """Copy ``origin`` to a temp name, fsynced; its size and SHA-256, and where it went (not yet
        :meth:`keep` -- the caller first checks the source did not change). With ``spare_core`` (a
        core would be idle otherwise), the chunk hashes are computed on a second thread.

        Read errors are raised as they come (``OSError``, ``EOFError``); a failed write as
        :class:`_WriteFailed`.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / temp_name(origin.name)
        with self._lock:
            self._temps.add(tmp)
        size = origin.stat().st_size
        whole = hashlib.sha256()
        # Larger than a chunk, its chunk hashes too: on a spare core, on a second thread a few buffers
        # behind the whole hash (the two hashes do not wait on each other); on a busy machine the hand-off
        # costs more than it gains, so in this thread.
        pieces = _Pieces(self.chunk_size) if size > self.chunk_size else None
        helper = None
        if pieces is not None and spare_core:
            helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage-hash")
        behind: deque[Future[None]] = deque()
        pos = 0
        try:
            with _writing(tmp):
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except BaseException:
            self.drop(tmp)
            raise
        try:
            for data in read_ranges(origin, ring=_RING):
                if helper is not None and pieces is not None:
                    behind.append(helper.submit(pieces.update, data))
                elif pieces is not None:
                    pieces.update(data)
                whole.update(data)
                with _writing(tmp):
                    self.disk.write(fd, data, pos)
                pos += len(data)
                if on_bytes:
                    on_bytes(len(data))
                while len(behind) >= _RING:  # the ring's next buffer must be hashed before it is refilled
                    behind.popleft().result()
            while behind:
                behind.popleft().result()
            with _writing(tmp):
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            self.drop(tmp)
            raise
        finally:
            if helper is not None:
                helper.shutdown(wait=True, cancel_futures=True)
        os.close(fd)
        digest = whole.hexdigest()
        chunks = pieces.finish() if pieces is not None else (digest,)
        return FileDigest(pos, digest), Staged(tmp, self.chunk_size, chunks)

    def keep(self, origin: Path, staged: Staged) -> None:
        with self._lock:
            self._staged[origin] = staged

    def drop(self, staged: Staged | Path) -> None:
        path = staged.path if isinstance(staged, Staged) else staged
        with self._lock:
            self._temps.discard(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def take(self, origin: Path) -> Staged | None:
        """The staged copy of ``origin``, if there is one, for the writer to rename into place (what is
        still at its temp name at the end is removed by :meth:`discard`)."""
        with self._lock:
            return self._staged.pop(origin, None)

    def held(self) -> set[Path]:
        """Every temp file staged and not yet given up (for the writer's clean-up to leave alone)."""
        with self._lock:
            return set(self._temps)

    def discard(self) -> None:
        with self._lock:
            temps, self._temps, self._staged = self._temps, set(), {}
        for path in temps:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@contextlib.contextmanager
def _writing(tmp: Path) -> Iterator[None]:
    """A failed write into ``tmp`` (a full disk named) as :class:`_WriteFailed`, told apart from a read."""
    try:
        with full_disk_named(tmp):
            yield
    except BundleError as exc:
        raise _WriteFailed(exc) from exc
    except OSError as exc:
        raise _WriteFailed(BundleError(f"{tmp}: cannot write: {exc.strerror}")) from exc


@dataclass(frozen=True)
class ToHash:
    origin: Path
    expected_sha256: str | None  # known in advance (Hugging Face LFS): checked
    name: str  # "artifact/path", for errors


def hash_files(
    files: Iterable[ToHash],
    cache: HashCache,
    *,
    workers: int,
    progress: ProgressSink | None = None,
    stager: Stager | None = None,
) -> dict[Path, Hashed]:
    """Hash each file once (the first name given for an origin is the one errors use).

    With a ``stager``, each file to hash that cannot hold the same content as another (see
    :func:`_distinct`) and that the stager wants is copied into the bundle in the same read.
    """
    todo: dict[Path, ToHash] = {}
    for f in files:
        todo.setdefault(f.origin, f)
    stamps: dict[Path, Stamp] = {}
    for origin, f in todo.items():
        try:
            stamps[origin] = Stamp.of(origin)
        except OSError as exc:
            raise SourceError(f"{f.name}: cannot read {origin}: {exc.strerror}") from exc
    results: dict[Path, Hashed] = {}
    pending = []
    for origin, stamp in stamps.items():
        cached = cache.get(origin, stamp)
        if cached is not None:
            results[origin] = Hashed(cached, stamp)
        else:
            pending.append(origin)
    meter = Meter(progress, "hash", sum(stamps[o].size for o in pending))
    stage = _distinct(pending, stamps, stager) if stager is not None else set()
    spare = len(pending) < workers  # fewer files than threads: a file's two hashes can use two cores

    def one(origin: Path) -> tuple[Path, Hashed]:
        expected, name = todo[origin].expected_sha256, todo[origin].name
        staged: Staged | None = None
        try:
            if stager is not None and origin in stage:
                (size, sha), staged = stager.copy(origin, on_bytes=meter, spare_core=spare)
            else:
                size, sha = hash_file(origin, on_bytes=meter)
        except _WriteFailed as failed:
            raise failed.error from failed.__cause__
        except (OSError, EOFError) as exc:
            raise SourceError(f"{name}: cannot read {origin}: {exc}") from exc
        try:
            after = Stamp.of(origin)
            if after != stamps[origin] or size != after.size:
                raise SourceError(
                    f"{name}: {origin} changed while it was being hashed", hint="run pack again"
                )
            if expected is not None and sha != expected:
                raise IntegrityError(
                    f"{name}: {origin} has sha256 {sha[:12]}..., but its source says {expected[:12]}...",
                    hint="the download is damaged: delete it from the cache and run pack again",
                )
        except BaseException:
            if stager is not None and staged is not None:
                stager.drop(staged)
            raise
        if stager is not None and staged is not None:
            stager.keep(origin, staged)
        cache.put(origin, after, sha)
        return origin, Hashed(sha, after)

    # Big files first, so the last worker is not left alone with the largest one.
    pending.sort(key=lambda o: -stamps[o].size)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="hash")
    try:
        for origin, hashed in pool.map(one, pending):
            results[origin] = hashed
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # no file is started after the first failure
        raise
    finally:
        pool.shutdown(wait=True)
        cache.save()
        meter.finish()
    return results


SAMPLE = 64 * 1024


def _distinct(pending: list[Path], stamps: dict[Path, Stamp], stager: Stager) -> set[Path]:
    """The files of ``pending`` the stager wants that cannot share their content with any other file:
    no other file has their size, or, among those of the same size, their first and last 64 KiB
    (read only for files whose size another file has; a file of two samples or less is all sample,
    so equal samples there mean equal content)."""
    sizes = Counter(stamp.size for stamp in stamps.values())
    keys = {
        origin: (stamp.size, _sample(origin, stamp.size))
        for origin, stamp in stamps.items()
        if sizes[stamp.size] > 1
    }
    shared = Counter(keys.values())
    return {
        o
        for o in pending
        if stager.wants(stamps[o].size) and (sizes[stamps[o].size] == 1 or shared[keys[o]] == 1)
    }


def _sample(path: Path, size: int) -> bytes:
    """The first and last :data:`SAMPLE` bytes of a file (all of it when it is small); empty when
    it cannot be read (hashing then names the error)."""
    try:
        with path.open("rb") as fh:
            if size <= 2 * SAMPLE:
                return fh.read()
            head = fh.read(SAMPLE)
            fh.seek(size - SAMPLE)
            return head + fh.read(SAMPLE)
    except OSError:
        return b""
