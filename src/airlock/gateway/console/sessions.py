"""The console's login sessions, kept in the key database beside the keys (SQLite or PostgreSQL), so
that every gateway worker and every gateway sharing ``gateway.database`` knows them.

A session is a random 256-bit token in an HttpOnly cookie; the database holds only its SHA-256, the
admin key it was opened with, a CSRF token and an absolute expiry. A session lives while its key
does: a revoked, expired or no longer admin key ends it on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from airlock.gateway.apikeys import ApiKey, key_from_row
from airlock.gateway.state import KEY_FIELDS, Conn, Database


def _schema(postgres: bool) -> str:
    real = "DOUBLE PRECISION" if postgres else "REAL"
    return (
        "CREATE TABLE IF NOT EXISTS console_sessions ("
        " token_sha256 TEXT PRIMARY KEY, key_id TEXT NOT NULL, csrf TEXT NOT NULL,"
        f" created_at {real} NOT NULL, expires_at {real} NOT NULL)"
    )


@dataclass(frozen=True)
class Session:
    key: ApiKey
    csrf: str
    created_at: float
    expires_at: float

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(self.csrf.encode(), sent.encode("utf-8", "replace"))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="surrogateescape")).hexdigest()


class SessionStore:
    """Sessions in ``db``; every call is one short transaction (call it from a thread, not the loop)."""

    def __init__(self, db: Database, ttl_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.clock = clock
        self._ready = False

    def _conn(self, conn: Conn) -> Conn:
        if not self._ready:
            conn.execute(_schema(self.db.postgres))
            self._ready = True
        return conn

    def open(self, key: ApiKey) -> tuple[str, Session]:
        """A new session for ``key``: (the cookie's token, the session). Expired sessions go."""
        now = self.clock()
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        session = Session(key, csrf, now, now + self.ttl_s)
        with self.db.connect() as raw:
            conn = self._conn(raw)
            conn.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO console_sessions(token_sha256, key_id, csrf, created_at, expires_at)"
                " VALUES (?,?,?,?,?)",
                (_digest(token), key.key_id, csrf, now, session.expires_at),
            )
        return token, session

    def find(self, token: str) -> Session | None:
        """The live session behind ``token``, or None (unknown, expired, or its key is no longer an
        active, unexpired admin key)."""
        now = self.clock()
        with self.db.connect() as raw:
            conn = self._conn(raw)
            row = conn.execute(
                "SELECT key_id, csrf, created_at, expires_at FROM console_sessions"
                " WHERE token_sha256 = ? AND expires_at > ?",
                (_digest(token), now),
            ).fetchone()
            if row is None:
                return None
            key_row = conn.execute(
                f"SELECT {KEY_FIELDS} FROM api_keys WHERE key_id = ? AND revoked_at IS NULL",  # noqa: S608
                (row[0],),
            ).fetchone()
        if key_row is None:
            return None
        key = key_from_row(key_row)
        if key.expired(now) or "admin" not in key.granted:
            return None
        return Session(key, row[1], row[2], row[3])

    def close(self, token: str) -> None:
        with self.db.connect() as raw:
            self._conn(raw).execute("DELETE FROM console_sessions WHERE token_sha256 = ?", (_digest(token),))
