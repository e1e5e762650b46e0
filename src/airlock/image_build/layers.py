"""Layer tarballs that come out byte for byte the same from the same files.

Python's ``tarfile`` with every varying field fixed: entries sorted by path, owner root (or a given
uid), no user or group names, every mtime SOURCE_DATE_EPOCH, GNU format (no PAX headers carrying
access times). Hand-written around ``tarfile`` rather than ``tar --sort=name --mtime=...`` so that the
result does not depend on the host's tar version, and so that the ancestors of each path are added as
directories (a layer that holds ``opt/airlock/x`` holds ``opt/`` and ``opt/airlock/``, as a runtime
unpacking it expects).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from airlock.errors import ImageBuildError


@dataclass(frozen=True)
class TarDigest:
    path: Path
    sha256: str  # of the uncompressed tar: the layer's diff ID
    size: int


def walk(root: Path, rel: str) -> Iterator[str]:
    """``rel`` and everything under it (links not followed), as paths relative to ``root``."""
    top = root / rel
    yield rel
    if top.is_dir() and not top.is_symlink():
        for dirpath, dirnames, filenames in os.walk(top):
            base = Path(dirpath).relative_to(root)
            for name in dirnames + filenames:
                yield str(PurePosixPath(base.as_posix()) / name)


def with_ancestors(paths: Iterable[str]) -> list[str]:
    """The paths and every parent folder of each, sorted (a parent before its children)."""
    every: set[str] = set()
    for path in paths:
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts:
            raise ImageBuildError(f"layer path {path!r} leaves the staged root")
        every.add(str(pure))
        every.update(str(parent) for parent in pure.parents if str(parent) != ".")
    return sorted(every, key=lambda p: PurePosixPath(p).parts)


class _Hashing:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, path: Path) -> None:
        self._fh = path.open("wb")
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self._fh.write(data)

    def close(self) -> None:
        self._fh.close()


def _info(root: Path, rel: str, *, epoch: int, owner: tuple[int, int]) -> tarfile.TarInfo:
    st = (root / rel).lstat()
    info = tarfile.TarInfo(rel)
    info.mtime = epoch
    info.uid, info.gid = owner
    info.uname = info.gname = ""
    info.mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(root / rel)
    else:
        raise ImageBuildError(f"{root / rel}: not a file, folder or link; a layer cannot carry it")
    return info


def write_layer(
    root: Path,
    paths: Iterable[str],
    out: Path,
    *,
    epoch: int,
    owners: Mapping[str, tuple[int, int]] | None = None,
) -> TarDigest:
    """Write ``paths`` (relative to ``root``, with their parent folders) to the tar ``out``.

    ``owners`` gives a path its ``(uid, gid)``; everything else is root's.
    """
    owned = owners or {}
    sink = _Hashing(out)
    try:
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:  # type: ignore[call-overload]
            for rel in with_ancestors(paths):
                info = _info(root, rel, epoch=epoch, owner=owned.get(rel, (0, 0)))
                if info.isreg():
                    with (root / rel).open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    finally:
        sink.close()
    return TarDigest(path=out, sha256=sink.sha.hexdigest(), size=sink.size)


def snapshot(root: Path, rel: str) -> dict[str, tuple[int, int, int]]:
    """Each path under ``root/rel`` with (inode, size, mtime_ns): what :func:`changed_since` compares."""
    found: dict[str, tuple[int, int, int]] = {}
    for path in walk(root, rel):
        st = (root / path).lstat()
        found[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


def changed_since(root: Path, rel: str, before: Mapping[str, tuple[int, int, int]]) -> list[str]:
    """Paths under ``root/rel`` added or changed since :func:`snapshot` gave ``before``; a removed path
    is an error (a layer on top cannot remove without a whiteout, and nothing here should remove)."""
    now = snapshot(root, rel)
    gone = sorted(set(before) - set(now))
    if gone:
        raise ImageBuildError(f"{gone[0]} was removed by a later step; the layers would not add up")
    return sorted(path for path, sig in now.items() if before.get(path) != sig)
