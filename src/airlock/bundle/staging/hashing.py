"""Hashing the files to pack, in parallel, with a cache so a re-run does not hash them again.

The cache (``hashes.json`` in ``.OUT.airlock-pack/``, beside OUT) keys each file by its absolute path and trusts a hash only
while the file's size, modification time, change time and inode are unchanged (what rsync and make
rely on). Files are hashed on ``workers`` threads (``hashlib`` releases the GIL).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from airlock.common.fileio import hash_file, write_atomic
from airlock.common.progress import Meter, ProgressSink
from airlock.errors import IntegrityError, SourceError


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
) -> dict[Path, Hashed]:
    """Hash each file once (the first name given for an origin is the one errors use)."""
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

    def one(origin: Path) -> tuple[Path, Hashed]:
        expected, name = todo[origin].expected_sha256, todo[origin].name
        try:
            size, sha = hash_file(origin, on_bytes=meter)
        except (OSError, EOFError) as exc:
            raise SourceError(f"{name}: cannot read {origin}: {exc}") from exc
        after = Stamp.of(origin)
        if after != stamps[origin] or size != after.size:
            raise SourceError(f"{name}: {origin} changed while it was being hashed", hint="run pack again")
        if expected is not None and sha != expected:
            raise IntegrityError(
                f"{name}: {origin} has sha256 {sha[:12]}..., but its source says {expected[:12]}...",
                hint="the download is damaged: delete it from the cache and run pack again",
            )
        cache.put(origin, after, sha)
        return origin, Hashed(sha, after)

    try:
        # Big files first, so the last worker is not left alone with the largest one.
        pending.sort(key=lambda o: -stamps[o].size)
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="hash") as pool:
            for origin, hashed in pool.map(one, pending):
                results[origin] = hashed
    finally:
        cache.save()
        meter.finish()
    return results
