"""Placing verified blobs into the store's final layout, atomically and without copying twice.

A blob reaches each place it belongs (``hub/models--org--name/blobs/<sha256>``, ``wheels/<file>``,
``files/<path>``) as a hard link to the verified copy (no bytes move), falling back to a streamed
copy where links are not possible; always through a temp name and ``os.replace``. A new snapshot
folder is built under a temp name and renamed into place whole, so vLLM never sees half a model.

Example::

    link_or_copy(incoming / sha, store.model_blob("org/m", sha))
    make_snapshot(store.repo_dir("org/m"), commit, {"config.json": sha, ...})
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from airlock.common.fileio import fsync_dir, is_disk_full, no_space, temp_name, write_atomic

_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES)


def link_or_copy(src: Path, dst: Path) -> bool:
    """Make ``dst`` hold ``src``'s content; True if it was linked (no copy). Existing ``dst`` is kept."""
    if dst.exists() and not dst.is_symlink() and dst.stat().st_size == src.stat().st_size:
        return True
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(temp_name(dst.name))
    try:
        try:
            os.link(src, tmp)
            linked = True
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            shutil.copyfile(src, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            linked = False
        os.replace(tmp, dst)
        return linked
    except OSError as exc:
        if is_disk_full(exc):
            raise no_space(exc, dst, needed=src.stat().st_size) from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _link_target(snapshot_file: Path, blob: Path) -> str:
    return os.path.relpath(blob, snapshot_file.parent)


def symlink_atomic(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` (relative), replacing what was there in one rename."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(temp_name(link.name))
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def make_snapshot(repo_dir: Path, commit: str, files: dict[str, str]) -> Path:
    """``snapshots/<commit>/<path> -> ../../blobs/<sha256>`` for every (path, sha256).

    A new snapshot appears whole (built under a temp name, then renamed). An existing one (the same
    commit installed before, perhaps with other files) gains the missing links one by one.
    """
    snapshots = repo_dir / "snapshots"
    final = snapshots / commit
    blobs = repo_dir / "blobs"
    if final.is_dir():
        for rel, sha in sorted(files.items()):
            link = final / rel
            target = _link_target(link, blobs / sha)
            if not (link.is_symlink() and os.readlink(link) == target):
                symlink_atomic(target, link)
        return final
    snapshots.mkdir(parents=True, exist_ok=True)
    tmp = snapshots / temp_name(commit)
    try:
        for rel, sha in sorted(files.items()):
            link = tmp / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(_link_target(final / rel, blobs / sha), link)
        os.rename(tmp, final)
        fsync_dir(snapshots)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_ref(repo_dir: Path, revision: str, commit: str) -> None:
    write_atomic(repo_dir / "refs" / revision, commit.encode())
