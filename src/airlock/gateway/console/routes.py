"""The operator console's HTTP side: the page and its assets, the login session, and the JSON APIs
the page reads and changes (``/console`` and ``/console/*``; the gateway hands those paths here).

Security, in one place:

* only an active, unexpired key with the ``admin`` scope logs in (typed once into the login form);
  the session is a random token in a cookie that is HttpOnly, SameSite=Strict, Path=/console, and
  Secure when the gateway speaks TLS; it expires after ``gateway.console_session_ttl_s`` and ends
  at once when its key is revoked or logged out;
* every change (POST) carries the session's CSRF token in ``X-CSRF-Token`` and, when the browser
  sends them, a same-origin ``Origin`` and ``Sec-Fetch-Site``; login itself takes JSON only (a
  cross-site form cannot send it without a CORS preflight, which is never answered);
* every response carries a strict Content-Security-Policy (scripts, styles and requests from this
  origin only: no inline script, no eval), ``nosniff``, ``no-referrer`` and ``frame-ancestors
  'none'``; the APIs are ``no-store``;
* logins (and failed ones), logouts, keys created and revoked, and refused changes are admin lines in
  the audit log, written (fsynced) before the answer; a log that cannot be written refuses changes.
  Reads are not audited: the page polls them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import importlib.resources
import logging
import math
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from airlock.errors import AirlockError, KeyStoreError
from airlock.gateway import apikeys
from airlock.gateway.apikeys import ApiKey, KeyLimits
from airlock.gateway.asgi import Receive, Scope, Send, header, read_body, send_bytes
from airlock.gateway.audit import AuditLog, ModelIdentity
from airlock.gateway.auth import KeyCache
from airlock.gateway.console import views
from airlock.gateway.console.sessions import Session, SessionStore
from airlock.gateway.console.throttle import LoginThrottle
from airlock.gateway.console.traffic import TrafficRing
from airlock.gateway.errors import APIError, key_store_unavailable
from airlock.gateway.limits import EngineGates
from airlock.gateway.metrics import GatewayMetrics
from airlock.gateway.routing import Router
from airlock.spec import GatewaySpec

log = logging.getLogger("airlock.gateway.console")

T = TypeVar("T")

COOKIE = "airlock_console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
_BODY_LIMIT = 64 * 1024
_AUDIT_LIMIT = 500


@dataclass(frozen=True)
class ConsoleConfig:
    """What the console shows beyond the gateway's own state (``airlock serve`` passes it in)."""

    store: Path | None = None  # the model store, for the store view and the models' digests


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: bytes
    etag: bytes


def load_assets() -> dict[str, _Asset]:
    """The page's files (package data under ``static/``), read once."""
    root = importlib.resources.files("airlock.gateway.console") / "static"
    assets = {}
    for item in root.iterdir():
        suffix = Path(item.name).suffix
        if suffix in _TYPES:
            body = item.read_bytes()
            etag = b'"' + hashlib.sha256(body).hexdigest()[:16].encode() + b'"'
            assets[item.name] = _Asset(body, _TYPES[suffix], etag)
    return assets


def _cookie(scope: Scope) -> str | None:
    raw = header(scope, b"cookie")
    if raw is None:
        return None
    for part in raw.decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def _content_type(scope: Scope) -> bytes:
    return (header(scope, b"content-type") or b"").split(b";")[0].strip().lower()


def _json(data: object) -> bytes:
    return orjson.dumps(data)


def _user_error(exc: AirlockError) -> APIError:
    message = exc.message + (f" ({exc.hint})" if exc.hint else "")
    return APIError(400, message, code="invalid_request")


def _when(value: object) -> float | None:
    """An expiry from the form: empty, a date (its start, UTC) or an ISO date and time (UTC unless
    it names an offset)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise APIError(400, "expires: give a date such as 2027-01-31", param="expires")
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise APIError(400, f"expires {value!r}: not a date (e.g. 2027-01-31)", param="expires") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _names(value: object, what: str) -> list[str] | None:
    """A list of names from the form: None or an empty list means "no restriction"."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise APIError(400, f"{what}: a list of names", param=what)
    names = [v.strip() for v in value if v.strip()]
    return names or None


def _limit(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        raise APIError(400, f"{name}: a whole number", param=name)
    return value


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise APIError(400, f"{name}: text", param=name)
    return value.strip() or None


class Console:
    def __init__(
        self,
        spec: GatewaySpec,
        router: Router,
        keys: KeyCache | None,
        metrics: GatewayMetrics,
        audit: AuditLog | None,
        *,
        gates: EngineGates,
        identities: Mapping[str, ModelIdentity] | None = None,
        config: ConsoleConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.router = router
        self.keys = keys
        self.audit = audit
        self.config = config or ConsoleConfig()
        self.clock = clock
        self.traffic = TrafficRing(metrics, gates.in_flight)
        self.sessions = (
            SessionStore(keys.store.db, spec.console_session_ttl_s, clock=clock) if keys is not None else None
        )
        self.login_throttle = LoginThrottle()
        self._identities = dict(identities or {})
        self._store_identities: dict[str, ModelIdentity] | None = None
        self._assets = load_assets()
        self._api: dict[tuple[str, str], Callable[[Scope, Receive, Session], Any]] = {
            ("GET", "engines"): self._engines,
            ("GET", "models"): self._models,
            ("GET", "keys"): self._keys,
            ("POST", "keys"): self._create_key,
            ("POST", "keys/revoke"): self._revoke_key,
            ("GET", "traffic"): self._traffic,
            ("GET", "audit"): self._audit_lines,
            ("GET", "audit/verify"): self._audit_verify,
            ("GET", "store"): self._store,
        }

    async def start(self) -> None:
        if self.keys is not None:  # without keys (--no-auth) the console is off: nothing to sample for
            await self.traffic.start()

    async def stop(self) -> None:
        await self.traffic.stop()

    # -- ASGI -------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer one request under /console; returns the status sent."""
        try:
            return await self._dispatch(scope, receive, send)
        except APIError as err:
            extra = err.header_pairs()
            await self._send(send, err.status, err.body(), headers=extra)
            return err.status
        except KeyStoreError as exc:  # the sessions live in the key database: fail closed, as the API does
            log.warning("console: %s", exc)
            down = key_store_unavailable("for the console's sessions")
            await self._send(send, down.status, down.body(), headers=down.header_pairs())
            return down.status
        except Exception:
            log.exception("console: %s %s failed", scope["method"], scope["path"])
            await self._send(send, 500, APIError(500, "internal error in the console (see the log)").body())
            return 500

    async def _send(
        self,
        send: Send,
        status: int,
        body: bytes,
        content_type: bytes = b"application/json",
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        cache: bytes = b"no-store",
    ) -> None:
        await send_bytes(
            send, status, body, content_type,
            [*SECURITY_HEADERS, (b"cache-control", cache), *(headers or [])],
        )  # fmt: skip

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> int:
        method, path = scope["method"], scope["path"]
        if self.keys is None or self.sessions is None:
            raise APIError(
                404, "the console needs API keys: it is off while the gateway runs with --no-auth",
                code="console_off",
            )  # fmt: skip
        if path in ("/console", "/console/"):
            return await self._asset(scope, send, "index.html", method)
        if path.startswith("/console/static/"):
            return await self._asset(scope, send, path.removeprefix("/console/static/"), method)
        if not path.startswith("/console/api/"):
            raise APIError(404, f"no page {path} in the console", code="not_found")
        name = path.removeprefix("/console/api/")
        if name == "login":
            self._only(method, "POST", path)
            return await self._login(scope, receive, send)
        session = await self._session(scope)
        if name == "session":
            self._only(method, "GET", path)
            return await self._reply(send, 200, self._session_info(session))
        if method == "POST":
            await self._check_change(scope, session, name)
        if name == "logout":
            self._only(method, "POST", path)
            return await self._logout(scope, send, session)
        handler = self._api.get((method, name))
        if handler is None:
            if any(n == name for _, n in self._api):
                raise APIError(405, f"method {method} is not allowed on {path}")
            raise APIError(404, f"no console API {path}", code="not_found")
        status, body = await handler(scope, receive, session)
        return await self._reply(send, status, body)

    @staticmethod
    def _only(method: str, allowed: str, path: str) -> None:
        if method != allowed:
            raise APIError(405, f"method {method} is not allowed on {path}", headers={"Allow": allowed})

    async def _reply(
        self, send: Send, status: int, body: object, headers: list[tuple[bytes, bytes]] | None = None
    ) -> int:
        await self._send(send, status, _json(body), headers=headers)
        return status

    async def _asset(self, scope: Scope, send: Send, name: str, method: str) -> int:
        if method not in ("GET", "HEAD"):
            raise APIError(405, f"method {method} is not allowed on {scope['path']}")
        asset = self._assets.get(name)
        if asset is None:
            raise APIError(404, f"no file {name} in the console", code="not_found")
        etag = [(b"etag", asset.etag)]
        if header(scope, b"if-none-match") == asset.etag:
            await self._send(send, 304, b"", asset.content_type, etag, cache=b"no-cache")
            return 304
        await self._send(send, 200, asset.body, asset.content_type, etag, cache=b"no-cache")
        return 200

    # -- sessions and CSRF --------------------------------------------------------------------------

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _session(self, scope: Scope) -> Session:
        assert self.sessions is not None
        token = _cookie(scope)
        session = await self._thread(self.sessions.find, token) if token else None
        if session is None:
            raise APIError(401, "not logged in (or the session expired): log in with an admin key",
                           code="login_required")  # fmt: skip
        return session

    def _session_info(self, session: Session) -> dict[str, Any]:
        return {
            "key": session.key.name,
            "key_id": session.key.key_id,
            "csrf": session.csrf,
            "expires_at": session.expires_at,
            "audit": self.spec.audit_log is not None,
        }

    @staticmethod
    def _origin_ok(scope: Scope) -> bool:
        """A same-origin request as far as the browser says: ``Sec-Fetch-Site`` and ``Origin``."""
        site = header(scope, b"sec-fetch-site")
        if site is not None and site not in (b"same-origin", b"none"):
            return False
        origin = header(scope, b"origin")
        if origin is None:
            return True
        host = header(scope, b"host") or b""
        scheme = str(scope.get("scheme", "http")).encode()
        return origin == scheme + b"://" + host

    async def _check_change(self, scope: Scope, session: Session | None, action: str) -> None:
        """A change needs a same-origin request with the session's CSRF token; a refusal is audited."""
        sent = header(scope, b"x-csrf-token")
        token = sent.decode("latin-1") if sent is not None else None
        json_body = _content_type(scope) == b"application/json"
        if session is not None and session.csrf_ok(token) and self._origin_ok(scope) and json_body:
            return
        if not self._origin_ok(scope):
            why = "cross-origin request"
        elif session is None or not session.csrf_ok(token):
            why = "missing or wrong CSRF token"
        else:
            why = "not a JSON request"
        with contextlib.suppress(OSError):  # refused either way
            await self._record(scope, "console_refused", session.key if session else None, what=action,
                               reason=why)  # fmt: skip
        raise APIError(403, f"refused: {why} (reload the console and try again)", code="csrf_failed")

    async def _record(self, scope: Scope, action: str, key: ApiKey | None, **fields: Any) -> None:
        """One admin line in the audit log, on disk before the answer; OSError when it cannot be."""
        if self.audit is None:
            return
        client = scope.get("client")
        line = {
            "event": "admin",
            "action": action,
            "via": "console",
            "key": key.name if key else None,
            "key_id": key.key_id if key else None,
            "client": client[0] if client else None,
            **fields,
        }
        self.audit.record(line)
        await self._thread(self.audit.flush)

    def _audit_ready(self) -> None:
        """Fail closed: no change the audit log cannot record."""
        if self.audit is not None and not self.audit.healthy and not self.spec.audit_fail_open:
            raise APIError(503, f"{self.audit.reason}; console changes are refused until it can be",
                           code="audit_unavailable", headers={"Retry-After": "5"})  # fmt: skip

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> int:
        assert self.keys is not None and self.sessions is not None
        client = scope.get("client")
        address = str(client[0]) if client else "-"
        wait = self.login_throttle.wait_s(address)
        if wait > 0:  # not audited: the failures that led here were
            raise APIError(
                429, f"too many failed logins from {address}: wait {math.ceil(wait)} s and try again",
                code="login_throttled", headers={"Retry-After": str(math.ceil(wait))},
            )  # fmt: skip
        # counted before the first await, cleared by a good login: guesses sent at once cannot all
        # pass the check above before any of them is counted
        before = self.login_throttle.failed(address)
        if _content_type(scope) != b"application/json" or not self._origin_ok(scope):
            with contextlib.suppress(OSError):  # refused either way
                await self._record(scope, "console_refused", None, what="login",
                                   reason="not a same-origin JSON login")  # fmt: skip
            raise APIError(403, "refused: log in from the console's own page", code="csrf_failed")
        self._audit_ready()
        data = self._object(await read_body(scope, receive, _BODY_LIMIT))
        token = data.get("key")
        if not isinstance(token, str) or not token.strip():
            raise APIError(400, "type an admin key (al-...)", param="key")
        try:
            key = await self.keys.authenticate(b"Bearer " + token.strip().encode(), "/admin/console")
        except APIError as err:
            if err.status >= 500:  # the key database is down: not a failed login
                self.login_throttle.restore(address, before)
                raise
            with contextlib.suppress(OSError):  # refused either way
                await self._record(scope, "console_login_failed", None, reason=err.code)
            if err.status == 403:
                raise APIError(403, "this key is not an admin key: the console needs the admin scope",
                               code="insufficient_scope") from None  # fmt: skip
            raise APIError(401, err.message, code=err.code) from None
        self.login_throttle.succeeded(address)
        previous = _cookie(scope)
        if previous:  # a new login never keeps a session the browser already held (nor one planted)
            await self._thread(self.sessions.close, previous)
        cookie_token, session = await self._thread(self.sessions.open, key)
        try:
            await self._record(scope, "console_login", key, expires_at=session.expires_at)
        except OSError as exc:  # a login the audit log cannot record does not stand
            await self._thread(self.sessions.close, cookie_token)
            raise APIError(503, f"the audit log cannot be written ({exc}): log in again once it can",
                           code="audit_unavailable") from None  # fmt: skip
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = (
            f"{COOKIE}={cookie_token}; Path=/console; HttpOnly; SameSite=Strict; "
            f"Max-Age={int(self.sessions.ttl_s)}{secure}"
        )
        return await self._reply(send, 200, self._session_info(session), [(b"set-cookie", cookie.encode())])

    async def _logout(self, scope: Scope, send: Send, session: Session) -> int:
        assert self.sessions is not None
        token = _cookie(scope)
        if token:
            await self._thread(self.sessions.close, token)
        await self._record(scope, "console_logout", session.key)
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = f"{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
        return await self._reply(send, 200, {"logged_out": True}, [(b"set-cookie", cookie.encode())])

    @staticmethod
    def _object(raw: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise APIError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise APIError(400, "the body is not a JSON object")
        return data

    # -- views --------------------------------------------------------------------------------------

    async def _identities_now(self) -> Mapping[str, ModelIdentity]:
        if self._identities:
            return self._identities
        if self._store_identities is None:
            self._store_identities = await self._thread(views.store_digests, self.config.store)
        return self._store_identities

    async def _engines(self, scope: Scope, receive: Receive, session: Session) -> tuple[int, object]:
        identities = await self._identities_now()
        return 200, {"engines": await self._thread(views.engines, self.router, identities)}

    async def _models(self, scope: Scope, receive: Receive, session: Session) -> tuple[int, object]:
        assert self.keys is not None
        listed = await self._thread(self.keys.store.list)
        return 200, {"models": views.models(self.router, listed)}

    async def _keys(self, scope: Scope, receive: Receive, session: Session) -> tuple[int, object]:
        assert self.keys is not None
        return 200, {"keys": await self._thread(views.keys, self.keys.store), "scopes": list(apikeys.SCOPES)}

    async def _create_key(self, scope: Scope, receive: Receive, session: Session) -> tuple[int, object]:
        assert self.keys is not None
        self._audit_ready()
        data = self._object(await read_body(scope, receive, _BODY_LIMIT))
        name = _text(data, "name") or ""
        models = _names(data.get("models"), "models")
        scopes = _names(data.get("scopes"), "scopes")
        limits = KeyLimits(*(_limit(data, n) for n in ("rpm", "tpm", "tpd", "concurrency")))
        expires_at = _when(data.get("expires"))
        store = self.keys.store
        try:
            if models is not None:
                apikeys.check_models(models, [n for n, _ in self.router.names()])
            key, token = await self._thread(
                lambda: store.create(
                    name, models, scopes=scopes, owner=_text(data, "owner"), team=_text(data, "team"),
                    expires_at=expires_at, limits=limits,
                )
            )  # fmt: skip
        except AirlockError as exc:
            raise _user_error(exc) from None
        try:
            await self._record(
                scope, "key_create", session.key, target=key.name, target_id=key.key_id,
                scopes=list(key.granted), models=list(key.models) if key.models else None,
                expires_at=key.expires_at, limits={n: v for n, v in vars(limits).items() if v is not None},
            )  # fmt: skip
        except OSError as exc:
            await self._thread(
                store.revoke, key.name
            )  # an admin action the audit cannot record does not stand
            raise APIError(503, f"the audit log cannot be written ({exc}): the key was not created",
                           code="audit_unavailable") from None  # fmt: skip
        return 201, {"key": views.key_row(key, None), "token": token}

    async def _revoke_key(self, scope: Scope, receive: Receive, session: Session) -> tuple[int, object]:
        assert self.keys is not None
        self._audit_ready()
        data = self._object(await read_body(scope, receive, _BODY_LIMIT))
        name = _text(data, "name")
        if name is None:
            raise APIError(400, "name the key to revoke", param="name")
        try:
            key = await self._thread(self.keys.store.revoke, name)
        except AirlockError as exc:
            raise APIError(404, exc.message, code="key_not_found") from None
        try:
            await self._record(scope, "key_revoke", session.key, target=key.name, target_id=key.key_id)
        except OSError as exc:  # the key stays revoked: the safe side; the operator is told
            raise APIError(503, f"the key is revoked, but the audit log cannot be written ({exc})",
                           code="audit_unavailable") from None  # fmt: skip
        return 200, {"key": views.key_row(key, None)}

    async def _traffic(self, scope: Scope, receive: Receive, session: Session) -> tuple[int, object]:
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        seconds = query.get("seconds", ["300"])[0]
        return 200, self.traffic.snapshot(int(seconds) if seconds.isdigit() else 300)

    async def _audit_lines(self, scope: Scope, receive: Receive, session: Session) -> tuple[int, object]:
        path = self.spec.audit_log
        if path is None:
            return 200, {"enabled": False, "lines": []}
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        filters = {
            f: query.get(f, [""])[0].strip() for f in ("event", "action", "key", "model", "status", "text")
        }
        limit = query.get("limit", ["100"])[0]
        count = min(_AUDIT_LIMIT, int(limit)) if limit.isdigit() else 100
        lines = await self._thread(views.audit_tail, path, filters, count)
        return 200, {"enabled": True, "path": str(path), "healthy": self.audit.healthy if self.audit else None,
                     "lines": lines}  # fmt: skip

    async def _audit_verify(self, scope: Scope, receive: Receive, session: Session) -> tuple[int, object]:
        path = self.spec.audit_log
        if path is None:
            return 200, {"enabled": False}
        if self.audit is not None:
            await self._thread(self.audit.flush)  # what was accepted is on disk before it is checked
        try:
            report = await self._thread(views.audit_verify, path)
        except AirlockError as exc:
            return 200, {"enabled": True, "ok": False, "problems": [exc.message]}
        return 200, {"enabled": True, **report}

    async def _store(self, scope: Scope, receive: Receive, session: Session) -> tuple[int, object]:
        try:
            return 200, await self._thread(views.store_contents, self.config.store)
        except AirlockError as exc:
            return 200, {
                "store": str(self.config.store),
                "error": str(exc),
                "models": [],
                "images": [],
                "bundles": [],
            }
