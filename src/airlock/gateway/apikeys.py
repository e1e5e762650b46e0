"""API keys: created once and shown once, stored hashed in SQLite, checked in constant time.

A key reads ``al-<key_id>-<secret>``: the 12-hex-digit id finds the row, the secret's SHA-256 is
compared with :func:`hmac.compare_digest`. SHA-256 rather than a slow password hash (argon2, bcrypt)
because the secret is 256 random bits, not a password: nothing to brute-force, and the gateway checks
a key on every request.

Example::

    store = KeyStore(Path("keys.db"))
    key, token = store.create("alice", models=["smollm2"])   # token is shown once, never stored
    store.authenticate(token).name                            # 'alice'
    store.revoke("alice")
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import KeyStoreError, ModelNotFoundError, UnknownKeyError

PREFIX = "al"
_ID_HEX = 12
_DUMMY_HASH = hashlib.sha256(b"airlock: no such key").digest()

_SCHEMA = """
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
"""


@dataclass(frozen=True)
class ApiKey:
    name: str
    key_id: str
    models: tuple[str, ...] | None  # None: every model
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


def check_models(models: Iterable[str], known: Iterable[str]) -> None:
    """Refuse model names that the gateway will never offer (``known``: names and aliases), naming
    the nearest known one, so that a typo never makes a key that opens nothing."""
    offered = sorted(set(known))
    for model in models:
        if model in offered:
            continue
        close = difflib.get_close_matches(model, offered, n=1)
        listed = ", ".join(offered) if offered else "none"
        raise ModelNotFoundError(
            f"no model named {model!r} to give a key to (models and aliases: {listed})",
            hint=f"did you mean {close[0]!r}?" if close else None,
        )


def _split(token: str) -> tuple[str, str] | None:
    parts = token.split("-", 2)
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != _ID_HEX or not parts[2]:
        return None
    return parts[1], parts[2]


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", errors="surrogateescape")).digest()


class KeyStore:
    """The key database. Cheap to construct; every call opens its own short connection."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10)
        except (OSError, sqlite3.Error) as exc:
            raise KeyStoreError(f"key database {self.path}: cannot be opened: {exc}") from exc
        try:
            with conn:
                conn.executescript(_SCHEMA)
                yield conn
        except sqlite3.Error as exc:
            raise KeyStoreError(f"key database {self.path}: {exc}") from exc
        finally:
            conn.close()
        with contextlib.suppress(OSError):
            self.path.chmod(0o600)

    @staticmethod
    def _row(row: tuple[str, str, str | None, float, float | None]) -> ApiKey:
        name, key_id, models, created, revoked = row
        return ApiKey(
            name, key_id, tuple(json.loads(models)) if models is not None else None, created, revoked
        )

    def create(self, name: str, models: list[str] | None = None) -> tuple[ApiKey, str]:
        """Create a key; returns it and the token, which is shown once and never stored."""
        if (
            not name
            or len(name) > 64
            or not name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise KeyStoreError(f"key name {name!r}: use 1-64 letters, digits, '-', '_' or '.'")
        if models is not None:
            models = list(dict.fromkeys(models))
            if not models:
                raise KeyStoreError(
                    "the key's model list is empty",
                    hint="name at least one model, or give none for a key to every model",
                )
            if any(not m or m != m.strip() for m in models):
                raise KeyStoreError(f"model names {models!r}: an empty name or one with spaces around it")
        key_id, secret = secrets.token_hex(_ID_HEX // 2), secrets.token_urlsafe(32)
        record = ApiKey(name, key_id, tuple(models) if models else None, time.time())
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM api_keys WHERE name=? AND revoked_at IS NULL", (name,)).fetchone():
                raise KeyStoreError(
                    f"an active key named {name!r} exists",
                    hint=f"revoke it first: airlock keys revoke {name}",
                )
            conn.execute(
                "INSERT INTO api_keys(name, key_id, secret_sha256, models, created_at) VALUES (?,?,?,?,?)",
                (
                    name,
                    key_id,
                    _hash(secret),
                    json.dumps(list(models)) if models else None,
                    record.created_at,
                ),
            )
        return record, f"{PREFIX}-{key_id}-{secret}"

    def list(self, include_revoked: bool = False) -> list[ApiKey]:
        query = "SELECT name, key_id, models, created_at, revoked_at FROM api_keys"
        if not include_revoked:
            query += " WHERE revoked_at IS NULL"
        with self._connect() as conn:
            return [self._row(r) for r in conn.execute(query + " ORDER BY id")]

    def revoke(self, name: str) -> ApiKey:
        with self._connect() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at=? WHERE name=? AND revoked_at IS NULL", (time.time(), name)
            )
            if cur.rowcount == 0:
                raise UnknownKeyError(f"no active key named {name!r}", hint="see `airlock keys list`")
            row = conn.execute(
                "SELECT name, key_id, models, created_at, revoked_at FROM api_keys WHERE name=? ORDER BY id DESC",
                (name,),
            ).fetchone()
        return self._row(row)

    def active_hashes(self) -> dict[str, tuple[bytes, ApiKey]]:
        """key_id -> (secret hash, key) for every active key: what the gateway keeps in memory."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT name, key_id, models, created_at, revoked_at, secret_sha256 FROM api_keys WHERE revoked_at IS NULL"
            ).fetchall()
        return {r[1]: (bytes(r[5]), self._row(r[:5])) for r in rows}

    def authenticate(self, token: str) -> ApiKey | None:
        return check_token(self.active_hashes(), token)


def check_token(table: dict[str, tuple[bytes, ApiKey]], token: str) -> ApiKey | None:
    """The key a token belongs to, or None; the hash compare runs whether or not the id is known."""
    parts = _split(token)
    if parts is None:
        hmac.compare_digest(_DUMMY_HASH, _hash(token))
        return None
    key_id, secret = parts
    stored, key = table.get(key_id, (_DUMMY_HASH, None))
    ok = hmac.compare_digest(stored, _hash(secret))
    return key if ok and key is not None else None
