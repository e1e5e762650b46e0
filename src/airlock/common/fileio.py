"""Streaming I/O for bundles: hashing, copying with chunk hashes, atomic writes, full-disk errors.

Reads are large (8 MiB) and sequential, with ``posix_fadvise(SEQUENTIAL)`` so the kernel reads ahead
while we hash; ``hashlib`` releases the GIL on large buffers, so threads hash on several cores.

Every write goes through a :class:`Disk`, the seam where tests inject a full disk::

    class FullAfter(Disk):
        def write(self, fd, data): ...raise OSError(errno.ENOSPC, "No space left on device")

An ``OSError`` with ``ENOSPC``/``EDQUOT`` becomes :class:`~airlock.errors.NoSpaceError` naming the file,
through one context manager, :func:`full_disk_named`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from airlock.errors import NoSpaceError

BUF = 1024 * 1024  # 1 MiB: with the kernel's readahead, smaller reads stream faster cold than 8 MiB ones
OnBytes = Callable[[int], None]
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Disk:
    """Where bytes are written; subclass to inject faults in tests."""

    def write(self, fd: int, data: memoryview, offset: int) -> None:
        """Write all of ``data`` at ``offset`` of ``fd``."""
        while data:
            n = os.pwrite(fd, data, offset)
            data = data[n:]
            offset += n

    def free_bytes(self, path: Path) -> int:
        return shutil.disk_usage(path).free


DEFAULT_DISK = Disk()


def is_disk_full(exc: BaseException) -> bool:
    """A full disk or quota, as the OS reports it or as one of ours already named it."""
    return isinstance(exc, NoSpaceError) or (isinstance(exc, OSError) and exc.errno in _FULL)


def no_space(exc: OSError, where: Path, *, needed: int | None = None) -> NoSpaceError:
    extra = f"; {human(needed)} more are needed" if needed else ""
    return NoSpaceError(
        f"{where}: the disk is full ({exc.strerror}){extra}",
        hint="free space or choose another folder; what was written is kept and a re-run resumes",
    )


@contextlib.contextmanager
def full_disk_named(where: Path, *, needed: int | None = None, by_file: bool = False) -> Iterator[None]:
    """Turn a full disk inside the block into a NoSpaceError naming ``where`` (with ``by_file``, the file
    the error names, when it names one) and, when given, how many bytes are ``needed``."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise no_space(exc, Path(exc.filename) if by_file and exc.filename else where, needed=needed) from exc


def human(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def temp_name(name: str) -> str:
    """A temp name unique to this process (and call): ``.NAME.tmp-PID-RANDOM``."""
    return f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


def _advise(fd: int, offset: int, length: int) -> None:
    with contextlib.suppress(AttributeError, OSError):  # not on every platform; only a hint
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_SEQUENTIAL)


def read_ranges(
    path: Path,
    offset: int = 0,
    length: int | None = None,
    *,
    buf: int = BUF,
    follow: bool = True,
    ring: int = 1,
) -> Iterator[memoryview]:
    """Yield the bytes of ``path[offset:offset+length]`` in buffers (reused: copy what you keep).

    With ``ring`` > 1 the buffers are taken in turn from a ring of that many, so a view stays valid
    for the next ``ring - 1`` yields (another thread can still be hashing it).

    Raises ``EOFError`` if the file ends early (a truncated blob). With ``follow=False`` a link is
    refused (``OSError`` ELOOP) rather than followed: what a volume holds is read only from the volume.
    """
    flags = os.O_RDONLY | (0 if follow else os.O_NOFOLLOW)
    with open(os.open(path, flags), "rb", buffering=0) as fh:
        fd = fh.fileno()
        if length is None:
            length = os.fstat(fd).st_size - offset
        _advise(fd, offset, length)
        size = min(buf, max(length, 1))
        views = [memoryview(bytearray(size)) for _ in range(max(1, ring))]
        pos, end, turn = offset, offset + length, 0
        while pos < end:
            view = views[turn]
            turn = (turn + 1) % len(views)
            want = min(size, end - pos)
            n = os.preadv(fd, [view[:want]], pos)
            if n == 0:
                raise EOFError(f"{path} ends at byte {pos}, before byte {end}")
            pos += n
            yield view[:n]


class FileDigest(NamedTuple):
    size: int
    sha256: str  # hex


def hash_file(path: Path, *, on_bytes: OnBytes | None = None) -> FileDigest:
    """The size and SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    size = 0
    for data in read_ranges(path):
        h.update(data)
        size += len(data)
        if on_bytes:
            on_bytes(len(data))
    return FileDigest(size, h.hexdigest())


def hash_range(
    path: Path, offset: int, length: int, *, on_bytes: OnBytes | None = None, follow: bool = True
) -> str:
    h = hashlib.sha256()
    for data in read_ranges(path, offset, length, follow=follow):
        h.update(data)
        if on_bytes:
            on_bytes(len(data))
    return h.hexdigest()


def copy_range(
    src: Path,
    src_offset: int,
    length: int,
    dst_fd: int,
    dst_offset: int,
    *,
    disk: Disk = DEFAULT_DISK,
    on_bytes: OnBytes | None = None,
    follow: bool = True,
) -> str:
    """Copy ``length`` bytes of ``src`` into ``dst_fd`` and return their sha256 (read once)."""
    h = hashlib.sha256()
    pos = dst_offset
    for data in read_ranges(src, src_offset, length, follow=follow):
        h.update(data)
        disk.write(dst_fd, data, pos)
        pos += len(data)
        if on_bytes:
            on_bytes(len(data))
    return h.hexdigest()


def write_atomic(path: Path, data: bytes, *, disk: Disk = DEFAULT_DISK, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temp name in the same folder, fsync, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    try:
        with full_disk_named(path, needed=len(data)):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            try:
                disk.write(fd, memoryview(data), 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
