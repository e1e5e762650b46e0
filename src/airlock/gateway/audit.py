"""The audit log: one hash-chained JSON line per request and per admin action, fsynced in batches.

Each line is a JSON object whose last member is ``"hash"``: the SHA-256 of the line's bytes up to
that member (``{...,"prev":"<hex>"}``). ``prev`` is the previous line's hash (64 zeros for the very
first line), and ``seq`` counts lines from 1 across every file, so an edited, removed or reordered
line breaks the chain at a place :func:`airlock.gateway.audit_verify.verify` names::

    {"seq":42,"ts":"2026-11-30T01:15:35.123Z","event":"request","request_id":"4be1...","key_id":"k3f...",
     "key":"alice","client":"10.0.0.7","method":"POST","route":"/v1/chat/completions","model":"smollm2",
     "engine":"llamacpp","weights":"sha256:9c1e...","status":200,"prompt_tokens":37,"completion_tokens":30,
     "ms":412.7,"request_sha256":"...","response_sha256":"...","prev":"<hex>","hash":"<hex>"}

Never the prompt or the answer unless ``text="full"``: by default their SHA-256 (of the request
body as received and the response body as sent), so a disputed exchange can be proved without the
log holding it.

**Off the request path.** A request only appends its dict (with the time) to a list. A writer task
takes the list every ``flush_ms`` (or sooner once ``batch_lines`` wait: one wake-up per batch, never
per line), and one thread serialises, hashes, writes and fsyncs the batch: one ``write``, one
``fsync`` and one head file per batch; per line only its JSON (orjson), its SHA-256 and a time
stamp whose date and time of day are formatted once per second. **What a crash can lose:** the
lines accepted in the last ``flush_ms`` plus the batch being written, and never more than
``max_pending`` lines: past that the log reports itself unhealthy and the gateway refuses requests
(503) until the writer has caught up.

**Rotated by size, never rewritten.** When the file passes ``max_bytes`` it is renamed
``<name>.<first seq, 12 digits>`` and a new one is started whose first line carries the last hash
of the one before. ``keep`` > 0 deletes the oldest rotated files beyond that many, and says so in
the chain (an ``audit_pruned`` line naming the last seq and hash removed), so that verify can tell
retention from deletion. ``<name>.head`` holds the seq and hash of the last line fsynced, written
atomically after each batch: lines cut off the end are missing against it.

**Several processes** (gateway workers, an admin command) may append to one log: each batch is
written under ``flock`` on ``<name>.lock``, and a writer that finds the file grown by another
re-reads its last line to continue the chain.

**Fail closed.** A batch that cannot be written (disk full, a removed directory, the file replaced)
makes :attr:`AuditLog.healthy` false with the reason in :attr:`AuditLog.problem`; the writer keeps
retrying every ``flush_ms`` and the log is healthy again once a batch is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from airlock.common.fileio import temp_name
from airlock.spec import GatewaySpec

log = logging.getLogger("airlock.gateway.audit")

GENESIS = "0" * 64
HASH_SUFFIX_LEN = len(',"hash":"') + 64 + len('"}\n')
TextMode = Literal["off", "sha256", "full"]
#: How far back from the end a writer reads to find the last line (a line is far shorter).
_TAIL_CHUNK = 1 << 16


@dataclass(frozen=True)
class AuditConfig:
    path: Path
    max_bytes: int = 100 * 1024 * 1024
    keep: int = 0  # rotated files to keep; 0 keeps them all
    text: TextMode = "sha256"
    flush_ms: int = 100
    batch_lines: int = 256
    max_pending: int = 10_000

    @classmethod
    def of(cls, spec: GatewaySpec) -> AuditConfig | None:
        """The audit log a gateway spec asks for (None: no ``audit_log``)."""
        if spec.audit_log is None:
            return None
        return cls(
            spec.audit_log,
            max_bytes=int(spec.audit_max_bytes),
            keep=spec.audit_keep,
            text=spec.audit_text,
            flush_ms=spec.audit_flush_ms,
        )


@dataclass(frozen=True)
class ModelIdentity:
    """What identifies a served model's weights in the audit: the store's digest over its files
    (``sha256:`` of the sorted ``path sha256`` lines of the bundle manifest's files), the snapshot
    commit and the bundle it was installed from."""

    digest: str
    commit: str | None = None
    bundle: str | None = None


def utc_now(when: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds, as syslog and SIEMs read it (``when``: a ``time.time()``)."""
    moment = dt.datetime.now(dt.UTC) if when is None else dt.datetime.fromtimestamp(when, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rotated_name(path: Path, first_seq: int) -> Path:
    return path.with_name(f"{path.name}.{first_seq:012d}")


def head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def seal(body: dict[str, Any], prev: str) -> tuple[bytes, str]:
    """``body`` with ``prev`` and its ``hash`` as one line; returns (line, hash)."""
    raw = orjson.dumps({**body, "prev": prev})
    digest = hashlib.sha256(raw).hexdigest()
    return raw[:-1] + b',"hash":"' + digest.encode() + b'"}\n', digest


#: A queued line: its time (a ``time.time()``, or already formatted) and its members.
Queued = tuple[float | str, dict[str, Any]]


def seal_batch(batch: Iterable[Queued], seq: int, prev: str) -> tuple[bytes, int, str]:
    """The queued lines sealed one after the other, the first numbered ``seq + 1`` and chained to
    ``prev``: (their bytes, the last seq, the last hash). Byte for byte the lines :func:`seal` makes
    of ``{"seq": n, "ts": <the time as utc_now formats it>, **body}`` (any ``ts`` of the body
    replaced), without that dict: the members are encoded as the body's own JSON, between the seq
    and time in front and ``prev`` behind."""
    lines: list[bytes] = []
    append = lines.append
    dumps, sha256 = orjson.dumps, hashlib.sha256
    last = prev.encode()
    for ts, body in batch:
        seq += 1
        if not body or "seq" in body or "ts" in body or "prev" in body:  # rare: the dict, as seal takes it
            stamp = utc_now(ts) if isinstance(ts, float) else ts
            members = {k: v for k, v in body.items() if k != "ts"}
            line, digest = seal({"seq": seq, "ts": stamp, **members}, last.decode())
            last = digest.encode()
            append(line)
            continue
        stamp_json = json_stamp(ts) if isinstance(ts, float) else dumps(ts)
        raw = b'{"seq":%d,"ts":%b,%b,"prev":"%b"}' % (seq, stamp_json, dumps(body)[1:-1], last)
        last = sha256(raw).hexdigest().encode()
        append(raw[:-1] + b',"hash":"' + last + b'"}\n')
    return b"".join(lines), seq, last.decode()


#: 10000-01-01T00:00:00Z: past it utc_now (datetime) raises, and so does json_stamp.
_END_OF_TIME = 253402300800
#: ``.mmmZ"``, the end of a stamp, for each millisecond.
_MILLIS = tuple(b'.%03dZ"' % ms for ms in range(1000))


def _second_text(second: int) -> tuple[int, bytes]:
    text = dt.datetime.fromtimestamp(second, dt.UTC).isoformat(timespec="seconds")
    return second, b'"' + text.replace("+00:00", "").encode()


#: The second :func:`json_stamp` formatted last, and its text up to the milliseconds (one tuple:
#: read and replaced whole, so that writers in several threads never see half of one).
_last_second = _second_text(0)


def json_stamp(when: float) -> bytes:
    """``orjson.dumps(utc_now(when))``, with the date and time of day formatted once per second.

    The microseconds are rounded as ``datetime.fromtimestamp`` rounds them (the fraction, which is
    exact, times 10^6, half to even, a carry into the next second) and cut to milliseconds as
    ``isoformat`` cuts them."""
    global _last_second
    second, text = _last_second
    fraction = when - second  # exact: ``second`` is ``when``'s whole part whenever it is in [0, 1)
    if 0 <= fraction < 1:
        us = round(fraction * 1e6)
        if us < 1_000_000:
            return text + _MILLIS[us // 1000]
    if not 0 <= when < _END_OF_TIME:  # before 1970, NaN, past 9999: as utc_now has it (or raises)
        return orjson.dumps(utc_now(when))
    fraction, whole = math.modf(when)
    us = round(fraction * 1e6)
    second = int(whole)
    if us >= 1_000_000:
        second, us = second + 1, us - 1_000_000
    cached = _last_second = _second_text(second)
    return cached[1] + _MILLIS[us // 1000]


def unseal(line: bytes) -> tuple[bytes, str] | None:
    """(the hashed bytes, the stated hash) of a sealed line, or None when it is not one."""
    if len(line) < HASH_SUFFIX_LEN or not line.endswith(b'"}\n'):
        return None
    cut = len(line) - HASH_SUFFIX_LEN
    if line[cut : cut + 9] != b',"hash":"':
        return None
    return line[:cut] + b"}", line[cut + 9 : cut + 73].decode("ascii", errors="replace")


def read_last_line(fd: int, size: int) -> bytes:
    """The file's last line (with its newline, or without one when the file ends in a partial line)."""
    if size == 0:
        return b""
    start = size
    data = b""
    while start > 0:
        step = min(_TAIL_CHUNK, start)
        start -= step
        data = os.pread(fd, step, start) + data
        cut = data.rfind(b"\n", 0, len(data) - 1)
        if cut >= 0:
            return data[cut + 1 :]
    return data


class _Chain:
    """The writer's view of the active file: where the chain stands and the file descriptors."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.lock_fd: int | None = None
        self.ino = 0
        self.size = 0
        self.seq = 0
        self.prev = GENESIS
        self.first_seq: int | None = None  # of the active file


class AuditLog:
    #: How a batch reaches the file (a seam: tests put a disk that fills up here).
    write = staticmethod(os.write)

    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self.path = config.path
        self._pending: list[Queued] = []  # appended by the event loop, taken by the writer
        self._notes: list[Queued] = []  # the writer's own lines (start, recovery, pruning)
        self._most = 10 * config.max_pending  # queued lines past this are dropped (and counted)
        self._head = head_path(self.path)
        self._dropped = 0
        self._chain = _Chain()
        self._io = threading.Lock()  # one batch at a time (the writer thread, or close)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.problem: str | None = None  # why the last batch could not be written
        self.durable_seq = 0  # the last seq fsynced by this process

    # -- the request path -------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self.problem is None and len(self._pending) <= self.config.max_pending

    @property
    def reason(self) -> str:
        if self.problem is not None:
            return f"the audit log {self.path} cannot be written ({self.problem})"
        return f"the audit log {self.path} is {len(self._pending)} lines behind"

    def record(self, record: dict[str, Any]) -> None:
        """Queue one line, stamped now (``ts``, after ``seq``; a ``ts`` of the record is replaced):
        the caller's dict is kept until written, so it must be the caller's own; never blocks.
        Lines past 10x ``max_pending`` are counted as dropped (the gateway refuses requests long
        before, unless it fails open) and the count is written to the chain as an
        ``audit_dropped`` line once the log can be written again."""
        pending = self._pending
        if len(pending) >= self._most:
            self._dropped += 1
            return
        pending.append((time.time(), record))
        if len(pending) >= self.config.batch_lines and self._wake is not None:
            self._wake.set()

    # -- lifecycle --------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or continue) the chain; raises OSError when the log cannot be written at all."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._io:
            lock = self._lock_fd()
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._reopen()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._notes.append((time.time(), {"event": "audit_start", "pid": os.getpid()}))

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.open)
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._pending.append((time.time(), {"event": "audit_stop", "pid": os.getpid()}))
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().run_in_executor(None, self.flush)
        with self._io:
            self._close_fds(lock=True)

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.flush_ms / 1000)
            self._wake.clear()
            if not self._pending and self.problem is None:
                continue
            try:
                await loop.run_in_executor(None, self.flush)
            except Exception as exc:
                problem = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
                if self.problem is None:
                    log.error("%s: %s; requests are refused until it can be written", self.path, problem)
                self.problem = problem

    # -- the writer (one thread at a time) --------------------------------------------------------

    def flush(self) -> None:
        """Write, fsync and seal everything queued so far; raises OSError (the lines stay queued)."""
        with self._io:
            count = len(self._pending)
            if not count and not self._notes and not self._dropped and self.problem is None:
                return
            self._write(count)
            if self.problem is not None:
                log.warning("%s: writable again", self.path)
                self.problem = None

    def _write(self, count: int) -> None:
        """Seal and write the first ``count`` queued lines, after the writer's own notes."""
        chain = self._chain
        lock = self._lock_fd()
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if chain.fd is None:
                self._reopen_in_chain()
            self._follow()
            assert chain.fd is not None
            dropped = self._dropped
            batch = self._notes + self._pending[:count]
            if dropped:
                batch.append((time.time(), {"event": "audit_dropped", "lines": dropped}))
            # The queued lines are left as they are: a batch that fails is sealed again from them.
            data, seq, prev = seal_batch(batch, chain.seq, chain.prev)
            try:
                written = self.write(chain.fd, data)
                if written != len(data):  # a full disk mid-batch: what was written ends in a partial line
                    raise OSError(errno.ENOSPC, "No space left on device (a partial write)")
                os.fsync(chain.fd)
            except OSError:
                # Nothing of this batch counts until it is fsynced: cut what did reach the file (a
                # partial line) so that the file ends on a whole line, and the batch is written
                # again, whole, once there is room. Never a line that was fsynced.
                with contextlib.suppress(OSError):
                    os.ftruncate(chain.fd, chain.size)
                raise
            if chain.first_seq is None and batch:
                chain.first_seq = chain.seq + 1
            chain.seq, chain.prev = seq, prev
            chain.size += len(data)
            self._notes = []
            del self._pending[:count]
            self._dropped -= dropped
            self.durable_seq = seq
            _write_head(self._head, orjson.dumps({"seq": seq, "hash": prev, "file": self.path.name}))
            if chain.size >= self.config.max_bytes:
                self._rotate()
        except OSError:
            self._close_fds()
            raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def _lock_fd(self) -> int:
        """``<name>.lock``, opened once: every batch is written under ``flock`` on it."""
        chain = self._chain
        if chain.lock_fd is None:
            lock = self.path.with_name(self.path.name + ".lock")
            chain.lock_fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return chain.lock_fd

    def _follow(self) -> None:
        """Under the lock: if another process rotated or appended, continue from the file as it is.

        A file that is gone (or replaced) and not by rotation is an error while its folder is gone
        or the path is not a file; once the path can be created again, a new file continues the
        chain from memory, and its first line says the file was missing."""
        chain = self._chain
        assert chain.fd is not None
        st = os.stat(self.path)  # FileNotFoundError when the file (or its directory) was removed
        if st.st_ino != chain.ino:
            self._reopen_in_chain()
        elif st.st_size != chain.size:
            self._read_tail()

    def _reopen_in_chain(self) -> None:
        """Reopen after the file changed under us: rotated by another writer (its chain is read from
        the files), or removed or replaced (the chain goes on from memory, and the first line of the
        new file says what happened)."""
        chain = self._chain
        seq, prev = chain.seq, chain.prev
        self._reopen()
        if chain.seq < seq:
            chain.seq, chain.prev = seq, prev
            self._notes.insert(0, (time.time(), {"event": "audit_reopened",
                                                 "reason": f"{self.path.name} was removed or replaced"}))  # fmt: skip

    def _reopen(self) -> None:
        """Open the active file and find where the chain stands (called under ``_io``)."""
        self._close_fds()
        chain = self._chain
        if not self.path.parent.is_dir():  # never recreate a removed folder: that is for the operator
            raise FileNotFoundError(2, "No such file or directory", str(self.path.parent))
        chain.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        chain.ino = os.fstat(chain.fd).st_ino
        self._read_tail()

    def _read_tail(self) -> None:
        chain = self._chain
        assert chain.fd is not None
        chain.size = os.fstat(chain.fd).st_size
        if chain.size == 0:
            chain.first_seq = None
            self._continue_from_rotated()
            return
        with open(self.path, "rb") as fh:
            first = fh.readline()
        chain.first_seq = _seq_of(first)
        last = read_last_line(chain.fd, chain.size)
        sealed = unseal(last) if last.endswith(b"\n") else None
        if sealed is None:
            self._recover_partial(last)
            return
        chain.seq = _seq_of(last) or 0
        chain.prev = sealed[1]

    def _continue_from_rotated(self) -> None:
        """An empty active file continues the newest rotated file's chain (or starts one)."""
        chain = self._chain
        rotated = rotated_files(self.path)
        if not rotated:
            chain.seq, chain.prev = 0, GENESIS
            return
        newest = rotated[-1]
        with open(newest, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            last = read_last_line(fh.fileno(), size)
        sealed = unseal(last)
        if sealed is None:
            raise OSError(f"{newest.name} ends in a damaged line; `airlock audit verify` names it")
        chain.seq, chain.prev = _seq_of(last) or 0, sealed[1]

    def _recover_partial(self, tail: bytes) -> None:
        """The active file ends in a partial line (a crash or a full disk mid-write): it is never
        rewritten; it is rotated as it is and the new file's first line records the cut."""
        chain = self._chain
        assert chain.fd is not None
        content = b""
        with open(self.path, "rb") as fh:
            content = fh.read()
        good = content[: len(content) - len(tail)]
        last_good = good[good.rfind(b"\n", 0, len(good) - 1) + 1 :] if good else b""
        sealed = unseal(last_good) if last_good else None
        seq = _seq_of(last_good) or 0 if last_good else 0
        prev = sealed[1] if sealed else GENESIS
        first_seq = chain.first_seq or seq + 1
        os.rename(self.path, rotated_name(self.path, first_seq))
        self._close_fds()
        chain.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        chain.ino = os.fstat(chain.fd).st_ino
        chain.size, chain.seq, chain.prev, chain.first_seq = 0, seq, prev, None
        self._notes.append(
            (time.time(), {"event": "audit_recovered", "file": rotated_name(self.path, first_seq).name,
                           "partial_bytes": len(tail)}),
        )  # fmt: skip

    def _rotate(self) -> None:
        chain = self._chain
        first = chain.first_seq or 1
        os.rename(self.path, rotated_name(self.path, first))
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if chain.fd is not None:
            os.close(chain.fd)
        chain.fd, chain.ino, chain.size, chain.first_seq = fd, os.fstat(fd).st_ino, 0, None
        _fsync_dir(self.path.parent)
        if self.config.keep > 0:
            self._prune()

    def _prune(self) -> None:
        rotated = rotated_files(self.path)
        doomed, kept = rotated[: -self.config.keep], rotated[-self.config.keep :]
        if not doomed or not kept:
            return
        with open(kept[0], "rb") as fh:
            first = fh.readline()
        data = orjson.loads(unseal(first)[0]) if unseal(first) else {}  # type: ignore[index]
        for path in doomed:
            path.unlink()
        _fsync_dir(self.path.parent)
        self._notes.append(
            (time.time(), {"event": "audit_pruned", "files": [p.name for p in doomed],
                           "upto_seq": int(data.get("seq", 1)) - 1, "upto_hash": data.get("prev")}),
        )  # fmt: skip

    def _close_fds(self, *, lock: bool = False) -> None:
        chain = self._chain
        for fd in (chain.fd, chain.lock_fd if lock else None):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        chain.fd = None
        if lock:
            chain.lock_fd = None


def append_admin(config: AuditConfig, action: str, **fields: Any) -> None:
    """Write one ``admin`` line now, from a command outside the gateway (``airlock keys create``...):
    under the same lock as the gateway's writer, continuing the same chain; raises OSError when the
    log cannot be written (the command should then fail: an unaudited admin action is refused)."""
    log = AuditLog(config)
    config.path.parent.mkdir(parents=True, exist_ok=True)
    log.record({"event": "admin", "action": action, "pid": os.getpid(), **fields})
    try:
        log.flush()
    finally:
        with log._io:
            log._close_fds(lock=True)


def _seq_of(line: bytes) -> int | None:
    try:
        value = orjson.loads(line).get("seq")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _write_head(path: Path, data: bytes) -> None:
    """Replace the head file atomically (a temp name, fsync, rename). Not ``write_atomic``: that one
    creates a missing folder, and a removed audit folder must stay an error (fail closed)."""
    tmp = path.with_name(temp_name(path.name))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "No space left on device (a partial write)")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):  # a full disk must not fill up with temp files too
            os.unlink(tmp)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of the log at ``path``, oldest first."""
    found = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit() and len(p.suffix) == 13]
    return sorted(found)


def text_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def model_identities(models: Iterable[Any]) -> dict[str, ModelIdentity]:
    """Each stored model's identity (:class:`airlock.store.db.StoredModel`), by its spec name."""
    found: dict[str, ModelIdentity] = {}
    for model in models:
        listing = "".join(f"{f.path} {f.sha256}\n" for f in sorted(model.files, key=lambda f: str(f.path)))
        digest = text_digest(listing.encode())
        found[model.name] = ModelIdentity(digest=digest, commit=model.commit, bundle=model.bundle)
    return found


def identity_fields(identity: ModelIdentity | None) -> Mapping[str, Any]:
    if identity is None:
        return {}
    return {"weights": identity.digest, "commit": identity.commit, "bundle": identity.bundle}
