"""API keys: created once and shown once, stored hashed, checked in constant time.

A key reads ``al-<key_id>-<secret>``: the 12-hex-digit id finds the row, the secret's SHA-256 is
compared with :func:`hmac.compare_digest`. SHA-256 rather than a slow password hash (argon2, bcrypt)
because the secret is 256 random bits, not a password: nothing to brute-force, and the gateway checks
a key on every request.

A key is scoped to models (``models``; None: every model) and to routes (``scopes``: chat,
completions, embeddings, models, metrics, admin; None: the four inference scopes), may expire, names
its owner and team, and may carry limits (:class:`KeyLimits`) that the gateway enforces exactly
(``gateway/limits.py``). An admin key (scope ``admin``) opens the admin routes and /metrics only.

The table lives in SQLite (``keys.db``) or PostgreSQL (``gateway.database``): ``gateway/state.py``.

Example::

    store = KeyStore(Path("keys.db"))
    key, token = store.create("alice", models=["smollm2"], limits=KeyLimits(rpm=60))
    store.authenticate(token).name                            # 'alice'
    store.revoke("alice")
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlock.errors import KeyStoreError, ModelNotFoundError, UnknownKeyError
from airlock.gateway.state import BUMP_GENERATION, KEY_FIELDS, Conn, Database

PREFIX = "al"
_ID_HEX = 12
_DUMMY_HASH = hashlib.sha256(b"airlock: no such key").digest()

#: Route scopes a key may hold. ``admin`` excludes the others except ``metrics``.
SCOPES = ("chat", "completions", "embeddings", "models", "metrics", "admin")
INFERENCE_SCOPES = ("chat", "completions", "embeddings", "models")


@dataclass(frozen=True)
class KeyLimits:
    """Per-key limits; None: no limit of that kind."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens (prompt + completion) per minute
    tpd: int | None = None  # tokens per UTC day
    concurrency: int | None = None  # requests in flight at once

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.tpd, self.concurrency))

    @property
    def tokens(self) -> bool:
        return self.tpm is not None or self.tpd is not None

    def describe(self) -> str:
        parts = [
            f"{value} {unit}"
            for value, unit in (
                (self.rpm, "req/min"),
                (self.tpm, "tok/min"),
                (self.tpd, "tok/day"),
                (self.concurrency, "at once"),
            )
            if value is not None
        ]
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class ApiKey:
    name: str
    key_id: str
    models: tuple[str, ...] | None  # None: every model
    created_at: float
    revoked_at: float | None = None
    scopes: tuple[str, ...] | None = None  # None: INFERENCE_SCOPES
    owner: str | None = None
    team: str | None = None
    expires_at: float | None = None
    limits: KeyLimits = field(default_factory=KeyLimits)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    @property
    def granted(self) -> tuple[str, ...]:
        return self.scopes if self.scopes is not None else INFERENCE_SCOPES

    def may(self, scope: str) -> bool:
        """Whether the key opens routes of ``scope``; an admin key also reads /metrics."""
        granted = self.granted
        return scope in granted or (scope == "metrics" and "admin" in granted)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True)
class KeyUsage:
    """What a key has used, as the gateways last wrote it (each adds its counts once a second)."""

    requests_today: int = 0
    prompt_today: int = 0
    completion_today: int = 0
    requests_total: int = 0
    prompt_total: int = 0
    completion_total: int = 0
    last_used_at: float | None = None


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


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Known scope names, deduplicated; ``admin`` goes with ``metrics`` only, never with inference."""
    chosen = tuple(dict.fromkeys(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise KeyStoreError(f"unknown scope {unknown[0]!r}", hint=f"scopes: {', '.join(SCOPES)}")
    if not chosen:
        raise KeyStoreError("the key's scope list is empty", hint=f"scopes: {', '.join(SCOPES)}")
    if "admin" in chosen and set(chosen) - {"admin", "metrics"}:
        raise KeyStoreError(
            "an admin key opens the admin routes only (and /metrics)",
            hint="make a second key for inference",
        )
    return chosen


def _split(token: str) -> tuple[str, str] | None:
    parts = token.split("-", 2)
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != _ID_HEX or not parts[2]:
        return None
    return parts[1], parts[2]


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", errors="surrogateescape")).digest()


def _label(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not value.strip() or len(value) > 128 or not value.isprintable():
        raise KeyStoreError(f"{what} {value!r}: use 1-128 printable characters")
    return value


def key_from_row(row: Any) -> ApiKey:
    """An ApiKey from the columns of :data:`airlock.gateway.state.KEY_FIELDS`, in that order."""
    name, key_id, models, created, revoked, scopes, owner, team, expires, rpm, tpm, tpd, conc = row
    return ApiKey(
        name,
        key_id,
        tuple(json.loads(models)) if models is not None else None,
        created,
        revoked,
        scopes=tuple(json.loads(scopes)) if scopes is not None else None,
        owner=owner,
        team=team,
        expires_at=expires,
        limits=KeyLimits(rpm, tpm, tpd, conc),
    )


def utc_day(now: float) -> int:
    return int(now // 86400)


class KeyStore:
    """The key database (a SQLite path, or a ``postgresql://`` URL). Cheap to construct; every call
    opens its own short connection and transaction."""

    def __init__(self, target: Path | str) -> None:
        self.db = Database(target)

    @property
    def path(self) -> Path | None:
        """The SQLite file, or None on PostgreSQL."""
        return None if self.db.postgres else Path(self.db.target)

    def _connect(self) -> Any:
        return self.db.connect()

    def create(
        self,
        name: str,
        models: list[str] | None = None,
        *,
        scopes: list[str] | None = None,
        owner: str | None = None,
        team: str | None = None,
        expires_at: float | None = None,
        limits: KeyLimits | None = None,
    ) -> tuple[ApiKey, str]:
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
        chosen = check_scopes(scopes) if scopes is not None else None
        limits = limits or KeyLimits()
        for what, value in vars(limits).items():
            if value is not None and value < 1:
                raise KeyStoreError(f"the {what} limit must be at least 1 (got {value})")
        now = time.time()
        if expires_at is not None and expires_at <= now:
            raise KeyStoreError("the expiry is in the past", hint="give a duration (30d) or a later date")
        key_id, secret = secrets.token_hex(_ID_HEX // 2), secrets.token_urlsafe(32)
        record = ApiKey(
            name,
            key_id,
            tuple(models) if models else None,
            now,
            scopes=chosen,
            owner=_label(owner, "owner"),
            team=_label(team, "team"),
            expires_at=expires_at,
            limits=limits,
        )
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM api_keys WHERE name=? AND revoked_at IS NULL", (name,)).fetchone():
                raise KeyStoreError(
                    f"an active key named {name!r} exists",
                    hint=f"revoke it first: airlock keys revoke {name}",
                )
            conn.execute(
                "INSERT INTO api_keys(name, key_id, secret_sha256, models, created_at, scopes, owner, team,"
                " expires_at, rpm, tpm, tpd, concurrency) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    name,
                    key_id,
                    _hash(secret),
                    json.dumps(list(models)) if models else None,
                    record.created_at,
                    json.dumps(list(chosen)) if chosen is not None else None,
                    record.owner,
                    record.team,
                    expires_at,
                    limits.rpm,
                    limits.tpm,
                    limits.tpd,
                    limits.concurrency,
                ),
            )
            conn.execute("INSERT INTO key_state(key_id) VALUES (?)", (key_id,))
            conn.execute(BUMP_GENERATION)
        return record, f"{PREFIX}-{key_id}-{secret}"

    def list(self, include_revoked: bool = False) -> list[ApiKey]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        query = f"SELECT {KEY_FIELDS} FROM api_keys{where} ORDER BY id"  # noqa: S608 (constants only)
        with self._connect() as conn:
            return [key_from_row(r) for r in conn.execute(query).fetchall()]

    def usage(self, now: float | None = None) -> dict[str, KeyUsage]:
        """key_id -> usage, for every key that was used; 'today' is the UTC day of ``now``."""
        today = utc_day(time.time() if now is None else now)
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT key_id, day, requests_day, prompt_day, completion_day, requests_total,"
                " prompt_total, completion_total, last_used_at FROM key_usage"
            ).fetchall()
        out = {}
        for key_id, day, req_d, p_d, c_d, req_t, p_t, c_t, last in rows:
            same = day == today
            out[key_id] = KeyUsage(
                req_d if same else 0, p_d if same else 0, c_d if same else 0, req_t, p_t, c_t, last
            )
        return out

    def revoke(self, name: str) -> ApiKey:
        with self._connect() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at=? WHERE name=? AND revoked_at IS NULL", (time.time(), name)
            )
            if cur.rowcount == 0:
                raise UnknownKeyError(f"no active key named {name!r}", hint="see `airlock keys list`")
            conn.execute(BUMP_GENERATION)
            row = conn.execute(
                f"SELECT {KEY_FIELDS} FROM api_keys WHERE name=? ORDER BY id DESC",  # noqa: S608
                (name,),
            ).fetchone()
        return key_from_row(row)

    def active_hashes(self) -> dict[str, tuple[bytes, ApiKey]]:
        """key_id -> (secret hash, key) for every active key: what the gateway keeps in memory."""
        with self._connect() as conn:
            return read_active(conn)

    def authenticate(self, token: str) -> ApiKey | None:
        key = check_token(self.active_hashes(), token)
        return key if key is not None and not key.expired(time.time()) else None


ACTIVE_KEYS = f"SELECT {KEY_FIELDS}, secret_sha256 FROM api_keys WHERE revoked_at IS NULL"  # noqa: S608


def read_active(conn: Conn) -> dict[str, tuple[bytes, ApiKey]]:
    rows = conn.execute(ACTIVE_KEYS).fetchall()
    return {r[1]: (bytes(r[-1]), key_from_row(r[:-1])) for r in rows}


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
