"""The gateway's SQLite counters: admissions and settlements in batches, one transaction each, that
never make the event loop wait for a lock, a checkpoint or a vanished file.

Requests put their admission (one conditional UPDATE) and settlement (one UPDATE) in a list; one
callback per turn of the event loop runs the whole list in ONE transaction (``BEGIN IMMEDIATE``, the
database's write lock across processes), adds this process's leases (``gateway/leases.py``) for
the keys it touched, and commits. So under load one commit serves many requests, and admissions
stay exact: each UPDATE sees every earlier one, in this process and in any other on the file. A
key's consecutive admissions in a batch are one UPDATE that checks them all at once (``used + k <=
limit``; one by one when they do not all fit), and its consecutive settlements one UPDATE, with the
same effect on the row as one by one (:meth:`Ledger.run`).

The loop's connection never waits: its busy timeout is 0 and it never checkpoints the WAL
(``wal_autocheckpoint=0``). When the lock is held by another process (a batch of another worker,
``airlock keys create``, a backup), when the file was deleted or replaced, or when it cannot be
read, the batch goes to a thread of its own (:class:`SqliteWriter`) with its own connection, which
waits up to ``busy_timeout_s``, reopens a replaced file, and answers what it cannot write with a
:class:`~airlock.errors.KeyStoreError` (the gateway's 503). Until that thread has caught up, later
batches follow it there, so that the order of admissions and settlements is kept. The thread also
runs the WAL checkpoint, the usage batches and the leases' heartbeat, once a second.

Settlements are not awaited and do not start a batch of their own: they join the next admission's
batch, or a timer's :data:`SETTLE_DELAY_S` later. Until then a key's slot or tokens count as used a
little longer than they were: never an admission too many. A settlement that cannot be written is
kept and tried again; one whose database was replaced (deleted and made again, restored) since its
admission is dropped, since that database never counted it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airlock.errors import KeyStoreError
from airlock.gateway import leases
from airlock.gateway.leases import Owner

log = logging.getLogger("airlock.gateway")

ADMIT, SETTLE = 0, 1
#: How long a settlement may wait for the next admission's batch.
SETTLE_DELAY_S = 0.005
#: How often the thread tries again settlements it could not write.
RETRY_S = 0.25

#: ``(ADMIT, sql, key_id, limits, tokens, minute, day, future)`` or
#: ``(SETTLE, key_id, delta, minute, day, ticket)`` (``ticket``: the epoch of its admission).
Op = tuple[Any, ...]
Result = tuple["asyncio.Future[Any]", Any, "BaseException | None", "Op | None"]
AdmitParams = Callable[[str, Any, int, int, int, int], Sequence[Any]]
SettleParams = Callable[[str, int, int, int, int, int], Sequence[Any]]


def connect(path: Path, timeout: float, *, create: bool) -> sqlite3.Connection:
    """An autocommit connection usable from any thread; ``create=False`` never makes a missing file."""
    uri = f"file:{quote(str(path))}?mode={'rwc' if create else 'rw'}"
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)


def ident(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def unavailable(path: Path, exc: BaseException) -> KeyStoreError:
    if isinstance(exc, KeyStoreError):
        return exc
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return KeyStoreError(f"key database {path} is locked by another process ({exc})")
    return KeyStoreError(f"key database {path}: {exc}")


class Ledger:
    """What the loop's batches and the thread's share: this owner, its leases, the file's epoch.

    ``admit_params(key_id, limits, tokens, minute, day, n)`` and ``settle_params(key_id, total,
    floor, minute, day, n)`` lay out the parameters of the admission SQL an op carries and of
    ``settle_sql`` (``gateway/state.py``): ``n`` requests at once, ``tokens`` their sum, and
    ``total`` and ``floor`` the settlements' deltas folded as :func:`fold_deltas` does.
    """

    def __init__(
        self,
        path: Path,
        settle_sql: str,
        admit_params: AdmitParams,
        settle_params: SettleParams,
        owner: Owner | None = None,
    ) -> None:
        self.path = path
        self.settle_sql = settle_sql
        self.admit_params = admit_params
        self.settle_params = settle_params
        self.owner = owner or Owner.me()
        self.epoch = 0  # goes up each time the file is (re)opened or this owner was reaped
        self.ident: tuple[int, int] | None = None
        self.leases: dict[str, int] = {}  # this process's requests in flight, per key

    def run(self, conn: sqlite3.Connection, batch: list[Op]) -> list[Result]:
        """The batch in one transaction; raises sqlite3.Error (nothing written, nothing changed).

        Ops of different keys touch different rows, so only each key's own order matters: a key's
        consecutive admissions (same limits, minute and day) are one UPDATE, and so are its
        consecutive settlements (same minute and day), each with exactly the effect of writing them
        one by one (see :meth:`_admit` and :func:`fold_deltas`)."""
        results: list[Result] = []
        moved: dict[str, int] = {}
        epoch = self.epoch
        runs: dict[str, list[Op]] = {}  # per key: its current run of ops of one kind, not yet written
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in batch:
                if op[0] == ADMIT:
                    key_id = op[2]
                elif op[5] == epoch:  # a settlement of a lease this file counted
                    key_id = op[1]
                else:
                    continue
                run = runs.get(key_id)
                if run is None:
                    runs[key_id] = [op]
                elif _joins(run[0], op):
                    run.append(op)
                else:
                    moved[key_id] = moved.get(key_id, 0) + self._write(conn, run, results)
                    runs[key_id] = [op]
            for key_id, run in runs.items():
                moved[key_id] = moved.get(key_id, 0) + self._write(conn, run, results)
            counts = {key_id: max(0, self.leases.get(key_id, 0) + change) for key_id, change in moved.items()}
            me = self.owner.owner
            for key_id, n in counts.items():
                if n:
                    conn.execute(leases.SET_LEASE, (me, key_id, n))
                else:
                    conn.execute(leases.DROP_LEASE, (me, key_id))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        for key_id, n in counts.items():
            if n:
                self.leases[key_id] = n
            else:
                self.leases.pop(key_id, None)
        return results

    def _write(self, conn: sqlite3.Connection, run: list[Op], results: list[Result]) -> int:
        """One key's run of admissions or of settlements; returns the change in its leases."""
        first = run[0]
        if first[0] == ADMIT:
            return self._admit(conn, run, results)
        _, key_id, _, minute, day, _ = first
        total, floor = fold_deltas([op[2] for op in run])
        conn.execute(self.settle_sql, self.settle_params(key_id, total, floor, minute, day, len(run)))
        return -len(run)

    def _admit(self, conn: sqlite3.Connection, run: list[Op], results: list[Result]) -> int:
        """A key's admissions, in order. k of them as one UPDATE that checks ``used + k <= limit``
        (and the tokens' sum): every use only grows, so when all k fit, each one by one would have
        fitted too, and the row ends the same. When they do not all fit, one by one, as they came."""
        _, sql, key_id, limits, _, minute, day, _ = run[0]
        epoch, n = self.epoch, len(run)
        if n > 1:
            params = self.admit_params(key_id, limits, sum(op[4] for op in run), minute, day, n)
            if conn.execute(sql, params).fetchone() is not None:
                for op in run:
                    results.append((op[7], epoch, None, (SETTLE, key_id, -op[4], minute, day, epoch)))
                return n
        admitted = 0
        for op in run:
            if conn.execute(sql, self.admit_params(key_id, limits, op[4], minute, day, 1)).fetchone() is None:
                results.append((op[7], None, None, None))
            else:
                admitted += 1
                results.append((op[7], epoch, None, (SETTLE, key_id, -op[4], minute, day, epoch)))
        return admitted


def _joins(first: Op, op: Op) -> bool:
    """Whether ``op`` may be written together with the run that ``first`` (of the same key) began."""
    if first[0] != op[0]:
        return False
    if op[0] == ADMIT:  # the same statement, limits, minute and day
        return bool(first[1] == op[1] and first[3] == op[3] and first[5] == op[5] and first[6] == op[6])
    return bool(first[3] == op[3] and first[4] == op[4])  # the same minute and day


def fold_deltas(deltas: list[int]) -> tuple[int, int]:
    """``(total, floor)`` such that ``max(floor, x + total)`` is what ``x`` becomes after
    ``x = max(0, x + d)`` for each ``d`` in ``deltas`` in turn (a settlement never takes a counter
    below zero): ``total`` is their sum, ``floor`` the largest sum of a tail that leaves out the
    first (or 0), the most that the clamp can leave behind."""
    total = floor = 0
    for delta in reversed(deltas[1:]):
        total += delta
        if total > floor:
            floor = total
    return total + deltas[0], floor


def resolve(items: list[Result], requeue: Callable[[Op], None]) -> None:
    """On the event loop: answer each waiting admission; one whose caller left is undone."""
    for future, value, error, undo in items:
        if future.done():  # cancelled: the client left while it waited
            if undo is not None:
                requeue(undo)
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _ignore(op: Op) -> None:
    pass


class SqliteWriter:
    """The thread: batches the loop could not write at once, and everything that may wait."""

    def __init__(
        self, ledger: Ledger, busy_timeout_s: float, prepare: Callable[[sqlite3.Connection], None]
    ) -> None:
        self.ledger = ledger
        self.path = ledger.path
        self.busy_timeout_s = busy_timeout_s
        self._prepare = prepare
        self._queue: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._held: list[Op] = []  # settlements to write again
        self.problem: str | None = None
        self._thread = threading.Thread(target=self._run, name="airlock-keydb", daemon=True)

    def start(self) -> None:
        """Open the file (creating it) in the caller's thread, so that a start fails at once, then run."""
        self._open(create=True)
        self._thread.start()

    # -- from the event loop --------------------------------------------------------------------

    def hand(self, batch: list[Op], done: Callable[[list[Result], bool], None]) -> None:
        """Write ``batch`` here; ``done(results, caught_up)`` is called on the loop afterwards."""
        self._queue.put(("batch", batch, done, asyncio.get_running_loop()))

    def call(self, fn: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        """``fn(connection)`` in the thread, in a transaction of its own."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put(("call", fn, future))
        return future

    def request_checkpoint(self) -> None:
        self._queue.put(("checkpoint",))

    async def close(self) -> None:
        """Write what is queued, free this owner's leases, close."""
        if self._thread.is_alive():
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        elif self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the thread -----------------------------------------------------------------------------

    def _open(self, *, create: bool) -> sqlite3.Connection:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        ledger = self.ledger
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            elif not self.path.exists():
                raise KeyStoreError(f"key database {self.path} is missing (deleted or moved)")
            conn = connect(self.path, self.busy_timeout_s, create=create)
            try:
                self._prepare(conn)
                me = ledger.owner.owner
                conn.execute("BEGIN IMMEDIATE")
                # a file restored from a backup may hold this owner's leases of then: free them
                conn.execute(leases.RELEASE_SQLITE, (me, me))
                conn.execute(leases.FORGET, (me,))
                conn.execute(leases.CLAIM, (me,))
                conn.execute(leases.REGISTER, ledger.owner.register_params(time.time()))
                leases.reap(conn, ledger.owner, time.time())
                conn.execute("COMMIT")
                found = ident(self.path)
            except BaseException:
                conn.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            raise KeyStoreError(f"key database {self.path}: cannot be opened: {exc}") from exc
        with contextlib.suppress(OSError):
            self.path.chmod(0o600)
        self._conn, ledger.ident = conn, found
        ledger.epoch += 1
        ledger.leases = {}
        self._held = []  # settlements of leases the new file never counted
        return conn

    def _connection(self) -> sqlite3.Connection:
        """The open connection, reopened when the file was replaced; KeyStoreError when it is gone."""
        try:
            now = ident(self.path)
        except OSError as exc:
            raise KeyStoreError(f"key database {self.path} is missing (deleted or moved)") from exc
        if self._conn is None or now != self.ledger.ident:
            if self._conn is not None:
                log.warning("key database %s was replaced: opening the new file", self.path)
            return self._open(create=False)
        return self._conn

    def _failed(self, exc: BaseException) -> KeyStoreError:
        error = unavailable(self.path, exc)
        if self.problem is None:
            log.error("%s; requests that need it are refused until it is back", error)
        self.problem = str(error)
        if not (isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)):
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            self._conn = None  # a damaged or vanished file: open it again next time
        return error

    def _ok(self) -> None:
        if self.problem is not None:
            log.warning("key database %s: usable again", self.path)
            self.problem = None

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=RETRY_S if self._held else None)
            except queue.Empty:
                self._retry_held()
                continue
            if item is None:
                self._retry_held()
                self._finish()
                return
            if item[0] == "call":
                self._call(item[1], item[2])
            elif item[0] == "checkpoint":
                self.checkpoint()
            else:
                self._batch(item[1], item[2], item[3])

    def _write(self, batch: list[Op]) -> list[Result]:
        """Write ``batch`` (after any held settlements); on failure its admissions get the error and
        its settlements are held for the next try."""
        batch, self._held = self._held + batch, []
        try:
            results = self.ledger.run(self._connection(), batch)
        except (sqlite3.Error, KeyStoreError, OSError) as exc:
            error = self._failed(exc)
            epoch = self.ledger.epoch
            results = []
            for op in batch:
                if op[0] == ADMIT:
                    results.append((op[7], None, error, None))
                elif op[5] == epoch:
                    self._held.append(op)
            return results
        self._ok()
        return results

    def _batch(self, batch: list[Op], done: Callable[[list[Result], bool], None], loop: Any) -> None:
        if not batch and self._held:
            time.sleep(RETRY_S)  # only settlements to try again: not in a tight loop
        results = self._write(batch)
        caught_up = not self._held and self._queue.empty()
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(done, results, caught_up)

    def _retry_held(self) -> None:
        if self._held:
            self._write([])

    def _call(self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]) -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                value = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            self._ok()
        except (sqlite3.Error, KeyStoreError, OSError) as exc:
            error = self._failed(exc)
        except Exception as exc:  # the call's own error, for its caller alone
            error = exc
        with contextlib.suppress(RuntimeError):
            answer: list[Result] = [(future, value, error, None)]
            future.get_loop().call_soon_threadsafe(resolve, answer, _ignore)

    def _finish(self) -> None:
        """The last batch is written: this owner leaves, its leases (normally none) freed."""
        conn = self._conn
        if conn is None:
            return
        me = self.ledger.owner.owner
        with contextlib.suppress(sqlite3.Error):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(leases.RELEASE_SQLITE, (me, me))
            conn.execute(leases.FORGET, (me,))
            conn.execute(leases.CLAIM, (me,))
            conn.execute("COMMIT")
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        self._conn = None

    def heartbeat(self, conn: sqlite3.Connection) -> int:
        """(In the thread, as a call.) Checkpoint the WAL (the loop's connection never does), say this
        owner is alive and free dead owners' leases; an owner found reaped registers again and forgets
        its old leases (they were already subtracted)."""
        ledger, now = self.ledger, time.time()
        if conn.execute(leases.HEARTBEAT, (now, ledger.owner.owner)).rowcount != 1:
            log.warning("key database %s: this gateway's leases were freed by another; registering again",
                        self.path)  # fmt: skip
            conn.execute(leases.REGISTER, ledger.owner.register_params(now))
            ledger.epoch += 1
            ledger.leases = {}
        return leases.reap(conn, ledger.owner, now)

    def checkpoint(self) -> None:
        """(In the thread.) Move the WAL into the file without waiting for readers (PASSIVE)."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
