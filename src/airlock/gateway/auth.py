"""Bearer-token checks for the gateway, from an in-memory copy of the key table kept in step with the store.

Every request asks the store whether a key was created or revoked since the last request
(:meth:`HotState.generation`: on SQLite ``PRAGMA data_version``, a few microseconds, and one row
when another connection wrote, read once for the requests of one turn of the event loop that were
read before it; on PostgreSQL one round trip) and reloads the copy when one was.
So a new key works the moment ``airlock keys create`` returns and a revoked key stops at once, on
every gateway sharing the store. Expiry, route scopes (:data:`ROUTE_SCOPES`) and models are checked
in memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable

from airlock.errors import KeyStoreError
from airlock.gateway.apikeys import ApiKey, KeyStore, check_token
from airlock.gateway.errors import APIError, key_store_unavailable
from airlock.gateway.state import HotState, open_state

log = logging.getLogger("airlock.gateway")

_MISSING = (
    "Missing API key: send it as 'Authorization: Bearer <key>'. "
    "An operator creates one with `airlock keys create NAME`."
)
_INVALID = "Invalid or revoked API key."
_BEARER = {"WWW-Authenticate": "Bearer"}

#: The scope a key needs for each route; a route not listed (``/version``) takes any valid key.
ROUTE_SCOPES = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/models": "models",
    "/metrics": "metrics",
}


def scope_of(path: str) -> str | None:
    scope = ROUTE_SCOPES.get(path)
    if scope is not None:
        return scope
    if path.startswith("/v1/models/"):
        return "models"
    if path.startswith("/admin/"):
        return "admin"
    return None


class KeyCache:
    """The gateway's view of the key store. ``open()`` (the gateway's startup) connects; the first
    ``authenticate`` does so too when nothing did. ``refresh_s``: how often the gateway writes the
    keys' usage back to the store (``airlock keys list`` lags by that much); key changes need no
    refresh, they are seen on the next request."""

    def __init__(
        self, store: KeyStore, refresh_s: float = 1.0, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.clock = clock
        self._state: HotState | None = None
        self._table: dict[str, tuple[bytes, ApiKey]] = {}
        self._generation = -1  # of the table in memory
        self._reload = asyncio.Lock()  # one reload at a time; requests behind it wait for its table

    async def open(self) -> HotState:
        if self._state is None:
            self._state = await open_state(self.store.db.target)
            await self._follow(self._state)
        return self._state

    async def _follow(self, state: HotState) -> None:
        """Reload the table if a key was created or revoked since it was read."""
        generation = await state.generation()
        if generation == self._generation:
            return
        async with self._reload:
            if generation > self._generation:
                table = await state.active()  # read after the generation: never older than it
                if generation > self._generation:
                    self._table, self._generation = table, generation

    @property
    def opened(self) -> bool:
        return self._state is not None

    @property
    def state(self) -> HotState:
        if self._state is None:
            raise RuntimeError("the key cache is not open (the gateway's startup opens it)")
        return self._state

    async def close(self) -> None:
        if self._state is not None:
            await self._state.close()
            self._state = None

    @property
    def count(self) -> int:
        return len(self._table)

    async def authenticate(self, authorization: bytes | None, path: str | None = None) -> ApiKey:
        """The key behind an ``Authorization`` header value, or APIError 401 (no such key, revoked,
        expired) or 403 (the key's scopes do not cover ``path``)."""
        try:
            await self._follow(self._state or await self.open())
        except KeyStoreError as exc:  # locked past its timeout, deleted, damaged, down: fail closed
            log.warning("%s", exc)
            raise key_store_unavailable("to check this key") from exc
        if not authorization:
            raise APIError(401, _MISSING, code="missing_api_key", headers=_BEARER)
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, _MISSING, code="missing_api_key", headers=_BEARER)
        key = check_token(self._table, token.strip())
        if key is None:
            raise APIError(401, _INVALID, code="invalid_api_key", headers=_BEARER)
        if key.expires_at is not None and self.clock() >= key.expires_at:
            when = dt.datetime.fromtimestamp(key.expires_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            raise APIError(401, f"This API key expired on {when}.", code="expired_api_key", headers=_BEARER)
        scope = scope_of(path) if path is not None else None
        if scope is not None and not key.may(scope):
            raise APIError(
                403,
                f"key '{key.name}' may not use {path} (it needs the '{scope}' scope; "
                f"the key has {', '.join(key.granted)})",
                code="insufficient_scope",
            )
        return key
