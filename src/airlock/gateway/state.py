"""Where keys, limits and usage live: SQLite (WAL) by default, PostgreSQL to share them between gateways.

Both speak the same SQL (written with ``?``; PostgreSQL gets ``%s``). Two tables carry the counters:

    key_state   one row per key: the current minute's requests and tokens, the current UTC day's
                tokens, requests in flight. Admission is ONE conditional ``UPDATE ... WHERE used + n
                <= limit RETURNING``: atomic in SQLite (one writer at a time, across processes) and
                in PostgreSQL (the row lock; READ COMMITTED re-checks the WHERE on the newest row),
                so limits stay exact across any number of gateway processes sharing the database.
    key_usage   requests and tokens per key, today and in total, and the last use; each gateway
                adds its counts in one batch a second (``airlock keys list`` lags by that much).

``meta.generation`` goes up with every key created or revoked; a gateway reads it for every request
(SQLite: ``PRAGMA data_version`` first, a few microseconds, and the row only when another connection
wrote; one read serves the requests of the same turn of the event loop that were read before it) and
reloads its copy of the key table when it moved, so a new key works the moment ``airlock keys
create`` returns and a revoked one stops at once.

    gateway_owners, key_leases   each gateway process and its requests in flight per key, written in
                the same transaction as ``key_state``, so that the slots of a gateway that died are
                freed by the others (``gateway/leases.py``).

On SQLite the admissions and settlements of one turn of the event loop are one transaction, on a
connection that never waits; a locked, replaced or damaged file is the business of a thread
(``gateway/sqlite_writer.py``).

Windows are fixed: a UTC minute (``int(t // 60)``) for requests and tokens per minute, a UTC day for
tokens per day.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airlock.errors import KeyStoreError
from airlock.gateway import leases
from airlock.gateway.leases import Owner
from airlock.gateway.sqlite_writer import (
    ADMIT,
    SETTLE,
    SETTLE_DELAY_S,
    Ledger,
    SqliteWriter,
    connect,
    resolve,
)

if TYPE_CHECKING:
    import psycopg

POSTGRES_PREFIXES = ("postgresql://", "postgres://")

_SQLITE_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    key_id TEXT NOT NULL UNIQUE,
    secret_sha256 BLOB NOT NULL,
    models TEXT,               -- JSON list of model names; NULL: every model
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS key_state (
    key_id TEXT PRIMARY KEY,
    minute INTEGER NOT NULL DEFAULT 0,
    minute_requests INTEGER NOT NULL DEFAULT 0,
    minute_tokens INTEGER NOT NULL DEFAULT 0,
    day INTEGER NOT NULL DEFAULT 0,
    day_tokens INTEGER NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS key_usage (
    key_id TEXT PRIMARY KEY,
    day INTEGER NOT NULL,
    requests_day INTEGER NOT NULL,
    prompt_day INTEGER NOT NULL,
    completion_day INTEGER NOT NULL,
    requests_total INTEGER NOT NULL,
    prompt_total INTEGER NOT NULL,
    completion_total INTEGER NOT NULL,
    last_used_at REAL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta(name, value) VALUES ('generation', 0) ON CONFLICT (name) DO NOTHING;
"""
    + leases.SQLITE_SCHEMA
)

_POSTGRES_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS api_keys (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    key_id TEXT NOT NULL UNIQUE,
    secret_sha256 BYTEA NOT NULL,
    models TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS key_state (
    key_id TEXT PRIMARY KEY,
    minute BIGINT NOT NULL DEFAULT 0,
    minute_requests BIGINT NOT NULL DEFAULT 0,
    minute_tokens BIGINT NOT NULL DEFAULT 0,
    day BIGINT NOT NULL DEFAULT 0,
    day_tokens BIGINT NOT NULL DEFAULT 0,
    in_flight BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS key_usage (
    key_id TEXT PRIMARY KEY,
    day BIGINT NOT NULL,
    requests_day BIGINT NOT NULL,
    prompt_day BIGINT NOT NULL,
    completion_day BIGINT NOT NULL,
    requests_total BIGINT NOT NULL,
    prompt_total BIGINT NOT NULL,
    completion_total BIGINT NOT NULL,
    last_used_at DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta(name, value) VALUES ('generation', 0) ON CONFLICT (name) DO NOTHING;
"""
    + leases.POSTGRES_SCHEMA
)

#: Columns added after the first release, with their SQL types: ``ALTER TABLE ... ADD COLUMN`` on open.
KEY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # name, SQLite type, PostgreSQL type
    ("scopes", "TEXT", "TEXT"),  # JSON list; NULL: the inference scopes
    ("owner", "TEXT", "TEXT"),
    ("team", "TEXT", "TEXT"),
    ("expires_at", "REAL", "DOUBLE PRECISION"),
    ("rpm", "INTEGER", "BIGINT"),
    ("tpm", "INTEGER", "BIGINT"),
    ("tpd", "INTEGER", "BIGINT"),
    ("concurrency", "INTEGER", "BIGINT"),
)

KEY_FIELDS = (
    "name, key_id, models, created_at, revoked_at, scopes, owner, team, expires_at, "
    "rpm, tpm, tpd, concurrency"
)

GENERATION = "SELECT value FROM meta WHERE name = 'generation'"
BUMP_GENERATION = "UPDATE meta SET value = value + 1 WHERE name = 'generation'"
#: Rows for keys that predate key_state (or were made by an older airlock).
FILL_STATE = (
    "INSERT INTO key_state(key_id) SELECT key_id FROM api_keys "
    "WHERE key_id NOT IN (SELECT key_id FROM key_state)"
)


class Conn(Protocol):
    """What KeyStore needs of a connection: sqlite3's and psycopg's both fit, once ``?`` is rewritten."""

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...


def is_postgres(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(POSTGRES_PREFIXES)


def redact(url: str) -> str:
    """A database URL fit for a message: the password, if any, replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise KeyStoreError(
            "gateway.database names PostgreSQL, but psycopg is not installed",
            hint="pip install 'airlock[postgres]' (psycopg 3)",
        ) from exc
    return psycopg


class _PgConn:
    """A psycopg connection that takes sqlite3's ``?`` placeholders."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql.replace("?", "%s"), params)


@dataclass(frozen=True)
class Database:
    """One place keys live: a SQLite file or a PostgreSQL URL. ``connect()`` is a short transaction."""

    target: Path | str

    @property
    def postgres(self) -> bool:
        return is_postgres(self.target)

    @property
    def label(self) -> str:
        return redact(self.target) if isinstance(self.target, str) else str(self.target)

    @contextlib.contextmanager
    def connect(self) -> Iterator[Conn]:
        if self.postgres:
            with self._connect_postgres() as conn:
                yield conn
            return
        path = Path(self.target)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lite = sqlite3.connect(path, timeout=10)
        except (OSError, sqlite3.Error) as exc:
            raise KeyStoreError(f"key database {path}: cannot be opened: {exc}") from exc
        try:
            with lite:
                prepare_sqlite(lite)
                yield lite
        except sqlite3.Error as exc:
            raise KeyStoreError(f"key database {path}: {exc}") from exc
        finally:
            lite.close()
        with contextlib.suppress(OSError):
            path.chmod(0o600)

    @contextlib.contextmanager
    def _connect_postgres(self) -> Iterator[Conn]:
        psycopg = import_psycopg()
        try:
            raw = psycopg.connect(str(self.target), connect_timeout=10)
        except psycopg.Error as exc:
            raise KeyStoreError(f"key database {self.label}: cannot connect: {exc}") from exc
        try:
            with raw:  # commits at the end, rolls back on an error
                prepare_postgres(raw)
                yield _PgConn(raw)
        except psycopg.Error as exc:
            raise KeyStoreError(f"key database {self.label}: {exc}") from exc


def prepare_sqlite(conn: sqlite3.Connection) -> None:
    """WAL (readers never wait for the writer, several processes share the file), the schema, new columns."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # in WAL: durable at checkpoints, never corrupt
    conn.executescript(_SQLITE_SCHEMA)
    have = {row[1] for row in conn.execute("PRAGMA table_info(api_keys)")}
    for name, sqlite_type, _ in KEY_COLUMNS:
        if name not in have:
            conn.execute(f"ALTER TABLE api_keys ADD COLUMN {name} {sqlite_type}")


def prepare_postgres(conn: psycopg.Connection[Any]) -> None:
    # Several gateways may start at once: one creates the schema, the others wait for it.
    conn.execute("SELECT pg_advisory_xact_lock(7243560112)")
    conn.execute(_POSTGRES_SCHEMA)
    for name, _, pg_type in KEY_COLUMNS:
        conn.execute(f"ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS {name} {pg_type}")


# -- the gateway's side: one long-lived connection, on the request path ------------------------------


@dataclass(frozen=True)
class Window:
    """A key's counters as stored: the minute and day they belong to, and what was used in them."""

    minute: int
    minute_requests: int
    minute_tokens: int
    day: int
    day_tokens: int
    in_flight: int


@dataclass(frozen=True)
class UsageRow:
    key_id: str
    day: int
    requests: int
    prompt: int
    completion: int
    last_used_at: float


#: Limit columns in the order admit() takes them: (limit name, the SQL for what is used after admission).
#: An admission is of ``n`` requests at once (SQLite's batches, ``gateway/sqlite_writer.py``), 1 otherwise.
_CHECKS = {
    "rpm": "(CASE WHEN minute = ? THEN minute_requests ELSE 0 END) + ? <= ?",
    "tpm": "(CASE WHEN minute = ? THEN minute_tokens ELSE 0 END) + ? <= ?",
    "tpd": "(CASE WHEN day = ? THEN day_tokens ELSE 0 END) + ? <= ?",
    "concurrency": "in_flight + ? <= ?",
}
_ADMIT = (
    "UPDATE key_state SET"
    " minute_requests = (CASE WHEN minute = ? THEN minute_requests ELSE 0 END) + ?,"
    " minute_tokens = (CASE WHEN minute = ? THEN minute_tokens ELSE 0 END) + ?,"
    " day_tokens = (CASE WHEN day = ? THEN day_tokens ELSE 0 END) + ?,"
    " minute = ?, day = ?, in_flight = in_flight + ?"
    " WHERE key_id = ? AND EXISTS (SELECT 1 FROM api_keys WHERE key_id = ? AND revoked_at IS NULL)"
)
#: ``n`` settlements at once: their deltas' sum and the floor the clamp at zero leaves
#: (``sqlite_writer.fold_deltas``); one settlement: its delta and 0.
_SETTLE = (
    "UPDATE key_state SET"
    " minute_tokens = CASE WHEN minute = ? THEN"
    "  (CASE WHEN minute_tokens + ? < ? THEN ? ELSE minute_tokens + ? END) ELSE minute_tokens END,"
    " day_tokens = CASE WHEN day = ? THEN"
    "  (CASE WHEN day_tokens + ? < ? THEN ? ELSE day_tokens + ? END) ELSE day_tokens END,"
    " in_flight = CASE WHEN in_flight > ? THEN in_flight - ? ELSE 0 END"
    " WHERE key_id = ?"
)
_WINDOW = "SELECT minute, minute_requests, minute_tokens, day, day_tokens, in_flight FROM key_state WHERE key_id = ?"
_ADD_USAGE = (
    "INSERT INTO key_usage(key_id, day, requests_day, prompt_day, completion_day,"
    " requests_total, prompt_total, completion_total, last_used_at) VALUES (?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (key_id) DO UPDATE SET"
    " requests_day = (CASE WHEN key_usage.day = excluded.day THEN key_usage.requests_day ELSE 0 END)"
    "  + excluded.requests_day,"
    " prompt_day = (CASE WHEN key_usage.day = excluded.day THEN key_usage.prompt_day ELSE 0 END)"
    "  + excluded.prompt_day,"
    " completion_day = (CASE WHEN key_usage.day = excluded.day THEN key_usage.completion_day ELSE 0 END)"
    "  + excluded.completion_day,"
    " day = excluded.day,"
    " requests_total = key_usage.requests_total + excluded.requests_total,"
    " prompt_total = key_usage.prompt_total + excluded.prompt_total,"
    " completion_total = key_usage.completion_total + excluded.completion_total,"
    " last_used_at = CASE WHEN key_usage.last_used_at IS NULL OR excluded.last_used_at > key_usage.last_used_at"
    "  THEN excluded.last_used_at ELSE key_usage.last_used_at END"
)


def admit_sql(limits: Sequence[str]) -> str:
    """The admission UPDATE for a key with ``limits`` (names from :data:`_CHECKS`), in that order."""
    where = "".join(f" AND {_CHECKS[name]}" for name in limits)
    return _ADMIT + where + " RETURNING in_flight"


def admit_params(
    key_id: str, limits: Sequence[tuple[str, int]], tokens: int, minute: int, day: int, n: int = 1
) -> list[Any]:
    """The parameters of :func:`admit_sql`'s UPDATE: ``n`` requests reserving ``tokens`` in all."""
    params: list[Any] = [minute, n, minute, tokens, day, tokens, minute, day, n, key_id, key_id]
    for name, limit in limits:
        if name == "rpm":
            params += (minute, n, limit)
        elif name == "tpm":
            params += (minute, tokens, limit)
        elif name == "tpd":
            params += (day, tokens, limit)
        else:
            params += (n, limit)
    return params


def settle_params(key_id: str, delta: int, floor: int, minute: int, day: int, n: int = 1) -> tuple[Any, ...]:
    """The parameters of the settlement UPDATE: ``n`` settlements whose deltas add up to ``delta``
    and leave at least ``floor`` (one settlement: its delta, 0)."""
    return (minute, delta, floor, floor, delta, day, delta, floor, floor, delta, n, n, key_id)


def sqlite_ledger(path: Path, owner: Owner | None = None) -> Ledger:
    """The ledger of :class:`SqliteState`'s batches (``gateway/sqlite_writer.py``) with this SQL."""
    return Ledger(path, _SETTLE, admit_params, settle_params, owner)


def usage_params(row: UsageRow) -> list[Any]:
    r = row
    return [
        r.key_id,
        r.day,
        r.requests,
        r.prompt,
        r.completion,
        r.requests,
        r.prompt,
        r.completion,
        r.last_used_at,
    ]


class HotState(Protocol):
    """The gateway's connection to the key database: every call is one statement, atomic on its own."""

    label: str

    async def generation(self) -> int:
        """The key table's generation: it goes up with every key created or revoked. Read after the
        caller's request was: a change committed before that request was sent is seen."""
        ...

    async def active(self) -> dict[str, tuple[bytes, Any]]: ...
    async def admit(
        self, key_id: str, limits: Sequence[tuple[str, int]], tokens: int, minute: int, day: int
    ) -> int | None:
        """Admitted: a ticket (the epoch of this gateway's leases) that :meth:`settle` takes; refused: None."""
        ...

    async def window(self, key_id: str) -> Window | None: ...
    async def settle(self, key_id: str, delta: int, minute: int, day: int, ticket: int = 0) -> None: ...
    async def add_usage(self, rows: Sequence[UsageRow]) -> None: ...
    async def maintain(self) -> int:
        """Heartbeat this gateway's leases and free those of dead gateways; returns how many were freed."""
        ...

    async def close(self) -> None: ...


class SqliteState:
    """The gateway's SQLite (``gateway/sqlite_writer.py``): counters written in batches on the event
    loop by a connection that never waits, and by a thread when it would have to.

    The generation check runs for every request: ``PRAGMA data_version`` on the loop's connection (a
    few microseconds; a read in WAL mode never waits for a writer; it moves only when another
    connection commits), at most once per turn of the event loop (:meth:`_hold_check`), and, every
    :data:`STAT_EVERY_S`, a ``stat`` of the path (deleted or replaced?). When that cannot be done at
    once (another process holds the file in exclusive locking mode, the file is gone or damaged),
    the thread reads it instead, waiting up to ``busy_timeout_s``, and a failure there is a
    :class:`KeyStoreError` (the gateway answers 503).
    """

    STAT_EVERY_S = 0.1

    def __init__(self, path: Path, busy_timeout_s: float = 5.0) -> None:
        self.label = str(path)
        self._path = path
        self._ledger = sqlite_ledger(path)
        self._writer = SqliteWriter(self._ledger, busy_timeout_s, _prepare_gateway)
        self._writer.start()  # KeyStoreError when the file cannot be opened
        self._fast: sqlite3.Connection | None = None
        self._fast_ident: tuple[int, int] | None = None
        self._stat_due = 0.0
        self._pending: list[tuple[Any, ...]] = []
        self._flush_handle: Any = None  # a call_soon or call_later handle while a flush is due
        self._flush_soon = False
        self._handed = 0  # batches with the thread, not yet answered; the loop waits for them
        self._data_version = -1
        self._generation = -1
        self._checked: Any = None  # the loop in whose current turn the generation was read
        self._sql: dict[tuple[tuple[str, int], ...], str] = {}  # admit_sql per limits
        self._event_loop: Any = None
        self._open_fast()

    # -- the loop's connection -------------------------------------------------------------------

    def _open_fast(self) -> None:
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        self._fast_ident = self._ledger.ident
        with contextlib.suppress(sqlite3.Error, OSError):
            fast = connect(self._path, 0.0, create=False)
            fast.execute("PRAGMA wal_autocheckpoint=0")  # the thread checkpoints, off the loop
            fast.execute("PRAGMA synchronous=NORMAL")  # per connection: in WAL, fsync at checkpoints only
            self._fast = fast
        self._data_version = -1

    def _usable(self) -> sqlite3.Connection | None:
        """The loop's connection while the file is the one it opened (checked every STAT_EVERY_S)."""
        fast = self._fast
        if fast is None or self._fast_ident != self._ledger.ident:
            return None
        now = time.monotonic()
        if now >= self._stat_due:
            try:
                st = os.stat(self._path)
            except OSError:
                return None
            if (st.st_dev, st.st_ino) != self._fast_ident:
                return None
            self._stat_due = now + self.STAT_EVERY_S
        return fast

    # -- batches -----------------------------------------------------------------------------------

    def _loop(self) -> Any:
        """The running loop, looked up once (``get_running_loop`` costs a getpid system call)."""

        loop = self._event_loop
        if loop is None or loop.is_closed():
            loop = self._event_loop = asyncio.get_running_loop()
        return loop

    def _schedule(self, soon: bool) -> None:
        loop = self._loop()
        if soon and not self._flush_soon:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush_handle = loop.call_soon(self._flush)
            self._flush_soon = True
        elif self._flush_handle is None:
            self._flush_handle = loop.call_later(SETTLE_DELAY_S, self._flush)

    def _flush(self) -> None:
        self._flush_handle, self._flush_soon = None, False
        if not self._pending or self._handed:
            return  # the thread has batches of ours: this one follows them when they are answered

        batch, self._pending = self._pending, []
        fast = self._usable()
        if fast is not None:
            try:
                results = self._ledger.run(fast, batch)
            except sqlite3.Error:
                pass  # locked by another process, or worse: the thread will wait, or say what it is
            else:
                resolve(results, self._requeue)
                return
        self._handed += 1
        self._writer.hand(batch, self._answered)

    def _answered(self, results: list[Any], caught_up: bool) -> None:
        self._handed -= 1
        resolve(results, self._requeue)
        if self._fast_ident != self._ledger.ident:
            self._open_fast()  # the thread opened a new file
        if self._handed:
            return
        if not caught_up:  # settlements held in the thread: what waits here goes there too, after them
            batch, self._pending = self._pending, []
            self._handed += 1
            self._writer.hand(batch, self._answered)
        elif self._pending:
            self._schedule(soon=True)

    def _requeue(self, op: tuple[Any, ...]) -> None:
        self._pending.append(op)
        self._schedule(soon=False)

    # -- HotState ----------------------------------------------------------------------------------

    async def generation(self) -> int:
        if self._checked is not None and self._checked is self._loop():
            return self._generation
        fast = self._usable()
        if fast is not None:
            try:
                version = fast.execute("PRAGMA data_version").fetchone()[0]
                if version != self._data_version:
                    self._generation = fast.execute(GENERATION).fetchone()[0]
                    self._data_version = version
            except sqlite3.Error:
                pass
            else:
                self._hold_check()
                return self._generation
        ledger = self._ledger
        generation, found = await self._writer.call(
            lambda conn: (conn.execute(GENERATION).fetchone()[0], ledger.ident)
        )
        if found != self._fast_ident or self._fast is None:
            self._open_fast()
        self._generation, self._data_version = generation, -1
        return int(generation)

    def _hold_check(self) -> None:
        """Let the generation just read answer the rest of this turn of the event loop.

        A check serves every request whose bytes were read before it, and those are exactly the
        requests that can ask before a callback scheduled now runs: the ready queue is first in,
        first out, and a request read from its socket later gets its task step queued later, behind
        that callback (a task's step always goes through the ready queue, so a request read after
        this check, even in this same turn, is checked again). A key revoked before a request was
        sent is therefore still refused by that request. Not with an eager task factory, which runs
        a new task's first step at once, inside the callback that read the request."""
        loop = self._loop()
        if loop.get_task_factory() is None:
            self._checked = loop  # a loop closed before the callback ran is not this one: no hold
            loop.call_soon(self._release_check)

    def _release_check(self) -> None:
        self._checked = None

    async def active(self) -> dict[str, tuple[bytes, Any]]:
        from airlock.gateway.apikeys import read_active

        result: dict[str, tuple[bytes, Any]] = await self._writer.call(read_active)
        return result

    async def admit(
        self, key_id: str, limits: Sequence[tuple[str, int]], tokens: int, minute: int, day: int
    ) -> int | None:
        limits = tuple(limits)  # the Limiter's own tuple, the same object for each request of a key
        sql = self._sql.get(limits)
        if sql is None:
            if len(self._sql) >= 256:
                self._sql.clear()
            sql = self._sql[limits] = admit_sql([name for name, _ in limits])
        future: asyncio.Future[int | None] = self._loop().create_future()
        self._pending.append((ADMIT, sql, key_id, limits, tokens, minute, day, future))
        self._schedule(soon=True)
        return await future

    async def window(self, key_id: str) -> Window | None:
        fast = self._usable()  # a read: on the loop's connection, which never waits (a refusal's why)
        row: Any = None
        try:
            if fast is None:
                raise sqlite3.OperationalError("use the thread")
            row = fast.execute(_WINDOW, (key_id,)).fetchone()
        except sqlite3.Error:
            row = await self._writer.call(lambda conn: conn.execute(_WINDOW, (key_id,)).fetchone())
        return Window(*row) if row is not None else None

    async def settle(self, key_id: str, delta: int, minute: int, day: int, ticket: int = 0) -> None:
        self._pending.append((SETTLE, key_id, delta, minute, day, ticket or self._ledger.epoch))
        self._schedule(soon=False)

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        params = [usage_params(r) for r in rows]
        await self._writer.call(lambda conn: conn.executemany(_ADD_USAGE, params))

    async def maintain(self) -> int:
        freed: int = await self._writer.call(self._writer.heartbeat)
        self._writer.request_checkpoint()
        return freed

    @property
    def problem(self) -> str | None:
        return self._writer.problem

    async def close(self) -> None:

        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._pending:
            self._handed += 1
            self._writer.hand(self._pending, self._answered)
            self._pending = []
        await self._writer.close()  # the thread writes what it was handed, then stops
        await asyncio.sleep(0)  # the answers it posted
        if self._fast is not None:
            self._fast.close()
            self._fast = None


def _prepare_gateway(conn: sqlite3.Connection) -> None:
    with conn:
        prepare_sqlite(conn)
        conn.execute(FILL_STATE)


class PostgresState:
    """A few autocommit connections to PostgreSQL, each statement one round trip (prepared after its
    fifth use by psycopg). Every request reads ``meta.generation``: a round trip, but a revoked key
    stops at once, on every gateway. An admission and its lease (``gateway/leases.py``) are one
    statement (a data-modifying CTE), and so are a settlement and its lease."""

    def __init__(self, url: str, connections: list[Any], owner: Owner | None = None) -> None:
        self.label = redact(url)
        self._idle: asyncio.Queue[Any] = asyncio.Queue()
        for conn in connections:
            self._idle.put_nowait(conn)
        self._all = connections
        self.owner = owner or Owner.me()
        self.epoch = 1
        self.problem: str | None = None

    @classmethod
    async def open(cls, url: str, size: int = 4) -> PostgresState:
        psycopg = import_psycopg()
        owner = Owner.me()
        try:
            with psycopg.connect(url, connect_timeout=10) as setup:
                prepare_postgres(setup)
                setup.execute(FILL_STATE)
                conn = _PgConn(setup)
                conn.execute(leases.REGISTER, owner.register_params(time.time()))
                leases.reap(conn, owner, time.time(), postgres=True)
            # synchronous_commit off: a commit returns before its WAL record reaches the disk (about
            # 3 ms less per statement on a disk that fsyncs); a crash of the database server may lose
            # the last fraction of a second of counters, never their consistency or the exactness
            # of admissions (row locks and visibility do not depend on it).
            conns = [
                await psycopg.AsyncConnection.connect(
                    url, autocommit=True, connect_timeout=10, options="-c synchronous_commit=off"
                )
                for _ in range(size)
            ]
        except psycopg.Error as exc:
            raise KeyStoreError(f"key database {redact(url)}: cannot connect: {exc}") from exc
        return cls(url, conns, owner)

    @contextlib.asynccontextmanager
    async def _conn(self) -> Any:
        psycopg = import_psycopg()
        conn = await self._idle.get()
        try:
            yield conn
            self.problem = None
        except psycopg.Error as exc:
            self.problem = str(exc)
            raise KeyStoreError(f"key database {self.label}: {exc}") from exc
        finally:
            self._idle.put_nowait(conn)

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._conn() as conn:
            cur = await conn.execute(sql.replace("?", "%s"), params)
            return await cur.fetchone() if cur.description is not None else None

    async def generation(self) -> int:
        return int((await self._one(GENERATION))[0])

    async def active(self) -> dict[str, tuple[bytes, Any]]:
        from airlock.gateway.apikeys import ACTIVE_KEYS, key_from_row

        async with self._conn() as conn:
            cur = await conn.execute(ACTIVE_KEYS)
            rows = await cur.fetchall()
        return {r[1]: (bytes(r[-1]), key_from_row(r[:-1])) for r in rows}

    async def admit(
        self, key_id: str, limits: Sequence[tuple[str, int]], tokens: int, minute: int, day: int
    ) -> int | None:
        sql = _PG_ADMIT.format(admit=admit_sql([name for name, _ in limits]))
        params = [*admit_params(key_id, limits, tokens, minute, day), self.owner.owner, key_id]
        epoch = self.epoch
        return epoch if await self._one(sql, params) is not None else None

    async def window(self, key_id: str) -> Window | None:
        row = await self._one(_WINDOW, (key_id,))
        return Window(*row) if row is not None else None

    async def settle(self, key_id: str, delta: int, minute: int, day: int, ticket: int = 0) -> None:
        if ticket and ticket != self.epoch:
            return  # this gateway was reaped since: its leases were freed then
        await self._one(_PG_SETTLE, [*settle_params(key_id, delta, 0, minute, day), self.owner.owner])

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        async with self._conn() as conn, conn.transaction():
            for row in rows:
                await conn.execute(_ADD_USAGE.replace("?", "%s"), usage_params(row))

    async def maintain(self) -> int:
        """Heartbeat, and free the leases of dead gateways (``gateway/leases.py``)."""
        me, now, freed = self.owner, time.time(), 0
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(leases.HEARTBEAT.replace("?", "%s"), (now, me.owner))
            if cur.rowcount != 1:
                await conn.execute(leases.REGISTER.replace("?", "%s"), me.register_params(now))
                self.epoch += 1
            cur = await conn.execute(leases.OWNERS.replace("?", "%s"), (me.owner,))
            for row in await cur.fetchall():
                if not leases.is_dead(tuple(row), me.host, now):
                    continue
                claimed = await conn.execute(leases.CLAIM.replace("?", "%s"), (row[0],))
                if claimed.rowcount == 1:
                    await conn.execute(leases.RELEASE_POSTGRES.replace("?", "%s"), (row[0], row[0]))
                    await conn.execute(leases.FORGET.replace("?", "%s"), (row[0],))
                    freed += 1
        return freed

    async def close(self) -> None:
        me = self.owner.owner
        with contextlib.suppress(Exception):
            async with self._conn() as conn, conn.transaction():
                await conn.execute(leases.RELEASE_POSTGRES.replace("?", "%s"), (me, me))
                await conn.execute(leases.FORGET.replace("?", "%s"), (me,))
                await conn.execute(leases.CLAIM.replace("?", "%s"), (me,))
        for conn in self._all:
            await conn.close()


_PG_ADMIT = (
    "WITH admitted AS ({admit}) INSERT INTO key_leases(owner, key_id, n) SELECT ?, ?, 1 FROM admitted"
    " ON CONFLICT (owner, key_id) DO UPDATE SET n = key_leases.n + 1 RETURNING n"
)
_PG_SETTLE_LEASE = (
    "UPDATE key_leases SET n = GREATEST(n - 1, 0) WHERE owner = ? AND key_id IN (SELECT key_id FROM settled)"
)
_PG_SETTLE = f"WITH settled AS ({_SETTLE} RETURNING key_id) {_PG_SETTLE_LEASE}"


async def open_state(target: Path | str) -> HotState:
    if is_postgres(target):
        return await PostgresState.open(str(target))
    return SqliteState(Path(target))
