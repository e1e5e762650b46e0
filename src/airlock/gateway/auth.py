"""Bearer-token checks for the gateway, from an in-memory copy of the key table.

The copy is reloaded when the database file changes (checked at most once a second), so
``airlock keys revoke`` takes effect on a running gateway within a second, and a request never
waits on SQLite.
"""

from __future__ import annotations

import os
import time

from airlock.gateway.apikeys import ApiKey, KeyStore, check_token
from airlock.gateway.errors import APIError

_MISSING = (
    "Missing API key: send it as 'Authorization: Bearer <key>'. "
    "An operator creates one with `airlock keys create NAME`."
)
_INVALID = "Invalid or revoked API key."


class KeyCache:
    def __init__(self, store: KeyStore, refresh_s: float = 1.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._table: dict[str, tuple[bytes, ApiKey]] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self.reload()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.store.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self) -> None:
        self._stamp = self._file_stamp()
        self._table = self.store.active_hashes() if self._stamp is not None else {}

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.refresh_s
        if self._file_stamp() != self._stamp:
            self.reload()

    @property
    def count(self) -> int:
        return len(self._table)

    def authenticate(self, authorization: bytes | None) -> ApiKey:
        """The key behind an ``Authorization`` header value, or APIError(401)."""
        self._maybe_reload()
        if not authorization:
            raise APIError(401, _MISSING, code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, _MISSING, code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
        key = check_token(self._table, token.strip())
        if key is None:
            raise APIError(401, _INVALID, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        return key
