"""Where keys, limits and usage live: SQLite (WAL) by default, PostgreSQL to share them between gateways.

Both speak the same SQL (written with ``?``; PostgreSQL gets ``%s``). Two tables carry the counters:

    key_state   one row per key: the current minute's requests and tokens, the current UTC day's
                tokens, requests in flight. Admission is ONE conditional ``UPDATE ... WHERE used + n
                <= limit RETURNING``: atomic in SQLite (one writer at a time, across processes) and
                in PostgreSQL (the row lock; READ COMMITTED re-checks the WHERE on the newest row),
                so limits stay exact across any number of gateway processes sharing the database.
    key_usage   requests and tokens per key, today and in total, and the last use; each gateway
                adds its counts in one batch a second (``airlock keys list`` lags by that much).

``meta.generation`` goes up with every key created or revoked; a gateway reads it on every request
(SQLite: ``PRAGMA data_version`` first, a few microseconds, and the row only when another connection
wrote) and reloads its copy of the key table when it moved, so a new key works the moment ``airlock
keys create`` returns and a revoked one stops at once.

Windows are fixed: a UTC minute (``int(t // 60)``) for requests and tokens per minute, a UTC day for
tokens per day.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airlock.errors import KeyStoreError

if TYPE_CHECKING:
    import psycopg

POSTGRES_PREFIXES = ("postgresql://", "postgres://")

_SQLITE_SCHEMA = """
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

_POSTGRES_SCHEMA = """
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
_CHECKS = {
    "rpm": "(CASE WHEN minute = ? THEN minute_requests ELSE 0 END) + 1 <= ?",
    "tpm": "(CASE WHEN minute = ? THEN minute_tokens ELSE 0 END) + ? <= ?",
    "tpd": "(CASE WHEN day = ? THEN day_tokens ELSE 0 END) + ? <= ?",
    "concurrency": "in_flight + 1 <= ?",
}
_ADMIT = (
    "UPDATE key_state SET"
    " minute_requests = (CASE WHEN minute = ? THEN minute_requests ELSE 0 END) + 1,"
    " minute_tokens = (CASE WHEN minute = ? THEN minute_tokens ELSE 0 END) + ?,"
    " day_tokens = (CASE WHEN day = ? THEN day_tokens ELSE 0 END) + ?,"
    " minute = ?, day = ?, in_flight = in_flight + 1"
    " WHERE key_id = ? AND EXISTS (SELECT 1 FROM api_keys WHERE key_id = ? AND revoked_at IS NULL)"
)
_SETTLE = (
    "UPDATE key_state SET"
    " minute_tokens = CASE WHEN minute = ? THEN"
    "  (CASE WHEN minute_tokens + ? < 0 THEN 0 ELSE minute_tokens + ? END) ELSE minute_tokens END,"
    " day_tokens = CASE WHEN day = ? THEN"
    "  (CASE WHEN day_tokens + ? < 0 THEN 0 ELSE day_tokens + ? END) ELSE day_tokens END,"
    " in_flight = CASE WHEN in_flight > 0 THEN in_flight - 1 ELSE 0 END"
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
    key_id: str, limits: Sequence[tuple[str, int]], tokens: int, minute: int, day: int
) -> list[Any]:
    params: list[Any] = [minute, minute, tokens, day, tokens, minute, day, key_id, key_id]
    for name, limit in limits:
        if name == "rpm":
            params += [minute, limit]
        elif name == "tpm":
            params += [minute, tokens, limit]
        elif name == "tpd":
            params += [day, tokens, limit]
        else:
            params += [limit]
    return params


def settle_params(key_id: str, delta: int, minute: int, day: int) -> list[Any]:
    return [minute, delta, delta, day, delta, delta, key_id]


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
        """The key table's generation: it goes up with every key created or revoked."""
        ...

    async def active(self) -> dict[str, tuple[bytes, Any]]: ...
    async def admit(
        self, key_id: str, limits: Sequence[tuple[str, int]], tokens: int, minute: int, day: int
    ) -> bool: ...
    async def window(self, key_id: str) -> Window | None: ...
    async def settle(self, key_id: str, delta: int, minute: int, day: int) -> None: ...
    async def add_usage(self, rows: Sequence[UsageRow]) -> None: ...
    async def close(self) -> None: ...


class SqliteState:
    """One SQLite connection in autocommit mode, used from the event loop's thread.

    Each statement is its own transaction and takes the database's write lock for microseconds
    (WAL, ``synchronous=NORMAL``: a commit appends to the WAL without fsync); another process
    holding the lock makes this one wait up to ``busy_timeout``, blocking the loop for that long.
    """

    def __init__(self, path: Path, busy_timeout_s: float = 5.0) -> None:
        self.label = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            with self._conn:
                prepare_sqlite(self._conn)
                self._conn.execute(FILL_STATE)
        except (OSError, sqlite3.Error) as exc:
            raise KeyStoreError(f"key database {path}: cannot be opened: {exc}") from exc
        with contextlib.suppress(OSError):
            path.chmod(0o600)
        self._data_version = -1
        self._generation = -1

    async def generation(self) -> int:
        # data_version moves only when ANOTHER connection commits (a key, or another gateway's
        # counters); only then is the generation row read again.
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self._generation = self._conn.execute(GENERATION).fetchone()[0]
        return self._generation

    async def active(self) -> dict[str, tuple[bytes, Any]]:
        from airlock.gateway.apikeys import read_active

        return read_active(self._conn)

    async def admit(
        self, key_id: str, limits: Sequence[tuple[str, int]], tokens: int, minute: int, day: int
    ) -> bool:
        sql = admit_sql([name for name, _ in limits])
        row = self._conn.execute(sql, admit_params(key_id, limits, tokens, minute, day)).fetchone()
        return row is not None

    async def window(self, key_id: str) -> Window | None:
        row = self._conn.execute(_WINDOW, (key_id,)).fetchone()
        return Window(*row) if row is not None else None

    async def settle(self, key_id: str, delta: int, minute: int, day: int) -> None:
        self._conn.execute(_SETTLE, settle_params(key_id, delta, minute, day))

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        with self._conn:  # one transaction for the batch
            self._conn.execute("BEGIN")
            self._conn.executemany(_ADD_USAGE, [usage_params(r) for r in rows])

    async def close(self) -> None:
        self._conn.close()


class PostgresState:
    """A few autocommit connections to PostgreSQL, each statement one round trip (prepared after its
    fifth use by psycopg). Every request reads ``meta.generation``: a round trip, but a revoked key
    stops at once, on every gateway."""

    def __init__(self, url: str, connections: list[Any]) -> None:
        import asyncio

        self.label = redact(url)
        self._idle: asyncio.Queue[Any] = asyncio.Queue()
        for conn in connections:
            self._idle.put_nowait(conn)
        self._all = connections

    @classmethod
    async def open(cls, url: str, size: int = 4) -> PostgresState:
        psycopg = import_psycopg()
        try:
            with psycopg.connect(url, connect_timeout=10) as setup:
                prepare_postgres(setup)
                setup.execute(FILL_STATE)
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
        return cls(url, conns)

    @contextlib.asynccontextmanager
    async def _conn(self) -> Any:
        conn = await self._idle.get()
        try:
            yield conn
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
    ) -> bool:
        sql = admit_sql([name for name, _ in limits])
        return await self._one(sql, admit_params(key_id, limits, tokens, minute, day)) is not None

    async def window(self, key_id: str) -> Window | None:
        row = await self._one(_WINDOW, (key_id,))
        return Window(*row) if row is not None else None

    async def settle(self, key_id: str, delta: int, minute: int, day: int) -> None:
        await self._one(_SETTLE, settle_params(key_id, delta, minute, day))

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        async with self._conn() as conn, conn.transaction():
            for row in rows:
                await conn.execute(_ADD_USAGE.replace("?", "%s"), usage_params(row))

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()


async def open_state(target: Path | str) -> HotState:
    if is_postgres(target):
        return await PostgresState.open(str(target))
    return SqliteState(Path(target))
