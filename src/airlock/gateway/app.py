"""The gateway as a plain ASGI application, built by :func:`create_app`; no module-level state.

Routes (nothing else reaches users, whatever the engines expose)::

    GET  /health                  liveness, no key
    GET  /ready                   200 when every engine is ready, else 503 (each engine's state); no key
    GET  /metrics                 Prometheus text (key unless gateway.metrics_auth is false)
    GET  /version                 airlock's and the engines' versions
    GET  /v1/models               ready models, under airlock's names and aliases, that the key may use
    GET  /v1/models/{name}
    GET  /openapi.json            an OpenAPI 3.1 description of these routes; no key
    POST /v1/chat/completions     \\
    POST /v1/completions           > validated, routed by "model", streamed through when asked
    POST /v1/embeddings           /
    GET  /console, /console/*     the operator console: a login with an admin key (docs/console.md)
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from airlock import __version__
from airlock.gateway.apikeys import ApiKey
from airlock.gateway.asgi import (
    ClientDisconnected,
    Message,
    Receive,
    Scope,
    Send,
    connection_abort,
    header,
    read_body,
    send_bytes,
    send_json,
    until_disconnect,
)
from airlock.gateway.audit import AuditConfig, AuditLog, ModelIdentity, identity_fields, text_digest
from airlock.gateway.auth import KeyCache
from airlock.gateway.console import Console, ConsoleConfig
from airlock.gateway.engine_client import EngineClient
from airlock.gateway.errors import APIError
from airlock.gateway.limits import EngineGates, Limiter
from airlock.gateway.metrics import GatewayMetrics
from airlock.gateway.openapi import openapi_document
from airlock.gateway.proxy import Outcome, StreamSend, forward
from airlock.gateway.routing import Route, Router
from airlock.gateway.validation import check_model_kind, parse_json_object, validate_request
from airlock.spec import GatewaySpec

log = logging.getLogger("airlock.gateway")

Handler = Callable[[Scope, Receive, Send, "_Request"], Awaitable[int]]
_GENERATION = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
_STREAMABLE = ("chat", "completions")
_DRAINING = ("the gateway is shutting down; retry shortly", {"Retry-After": "5", "Connection": "close"})
NO_KEY = "-"
#: Request ids: 20 random hex digits drawn once per process, then a counter (12 hex digits): unique,
#: 32 characters like a uuid4's hex, and no getrandom system call per request.
_ID_PREFIX = secrets.token_hex(10)
_ID_COUNTER = itertools.count(1)


def _new_id_prefix() -> None:  # a forked child draws its own
    global _ID_PREFIX
    _ID_PREFIX = secrets.token_hex(10)


os.register_at_fork(after_in_child=_new_id_prefix)


class _Request:
    __slots__ = (
        "_send",
        "audit",
        "key",
        "model",
        "request_id",
        "responded",
        "response_hash",
        "started",
        "usage",
    )

    def __init__(self, send: Send) -> None:
        self.started = time.perf_counter()
        self.key: ApiKey | None = None
        self.model = NO_KEY
        self.request_id = f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"
        self.responded = False
        self.usage: dict[str, Any] | None = None
        self.audit: dict[str, Any] = {}  # what the audit line adds: engine, weights, text hashes
        self.response_hash: Any = None  # a hashlib object while the response body is hashed for it
        self._send = send

    async def send(self, message: Message) -> None:
        """ASGI send that remembers whether the status line went out (an error then cannot be sent)."""
        if message["type"] == "http.response.start":
            self.responded = True
        elif self.response_hash is not None:
            self.response_hash.update(message.get("body", b""))
        await self._send(message)

    @property
    def key_label(self) -> str:
        return self.key.name if self.key is not None else NO_KEY


class Gateway:
    def __init__(
        self,
        spec: GatewaySpec,
        router: Router,
        keys: KeyCache | None,
        metrics: GatewayMetrics,
        identities: dict[str, ModelIdentity] | None = None,
        console: ConsoleConfig | None = None,
    ) -> None:
        self.spec = spec
        self.router = router
        self.keys = keys
        self.metrics = metrics
        self.limits = Limiter(keys, metrics.registry) if keys is not None else None
        self.gates = EngineGates(metrics.registry, limit=spec.engine_concurrency, queue=spec.engine_queue)
        self.engine_client: EngineClient | None = None
        self.draining = False  # shutting down: requests in flight finish, new ones get 503
        self.identities = identities or {}
        audit = AuditConfig.of(spec)
        self.audit = AuditLog(audit) if audit is not None else None
        self.console = Console(spec, router, keys, metrics, self.audit, gates=self.gates,
                               identities=self.identities, config=console)  # fmt: skip
        self._routes: dict[tuple[str, str], tuple[Handler, bool]] = {
            ("GET", "/health"): (self._health, False),
            ("GET", "/ready"): (self._ready, False),
            ("GET", "/metrics"): (self._metrics, spec.metrics_auth),
            ("GET", "/version"): (self._version, True),
            ("GET", "/v1/models"): (self._models, True),
            ("GET", "/openapi.json"): (self._openapi, False),
        }
        for path in _GENERATION:
            self._routes[("POST", path)] = (self._generate, True)
        self._paths = {path for _, path in self._routes}

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        self.engine_client = EngineClient(connect_timeout_s=10, read_timeout_s=self.spec.request_timeout_s)
        if self.audit is not None:
            await self.audit.start()
        await self.console.start()
        openapi_document(self.spec)  # built once (pydantic's schemas take ~0.1 s), not on a request
        if self.limits is not None:
            await self.limits.start()  # opens the key store: one that cannot be opened fails the start
        if self.keys is None:
            # `airlock serve` says so on its own line; a log line here would repeat it in log format
            log.debug("authentication is OFF: anyone who reaches this port can use every model")

    def drain(self) -> None:
        """The server is stopping: from now on model requests and /ready answer 503."""
        self.draining = True

    async def shutdown(self) -> None:
        await self.console.stop()
        if self.limits is not None:
            await self.limits.close()
        if self.audit is not None:
            await self.audit.close()
        if self.engine_client is not None:
            await self.engine_client.close()
            self.engine_client = None

    async def _http(self, scope: Scope, receive: Receive, raw_send: Send) -> None:
        method, path = scope["method"], scope["path"]
        entry = self._routes.get((method, path))
        if entry is None:  # the API's routes first: they are the hot path
            if path == "/console" or path.startswith("/console/"):
                # its own auth; it audits its actions, not its reads
                await self.console(scope, receive, raw_send)
                return
            if method == "GET" and path.startswith("/v1/models/"):
                entry = (self._model, True)
        request = _Request(raw_send)
        send = request.send
        route = path if entry is not None else "other"
        gauge = self.metrics.in_flight_for(route)
        gauge.inc()
        status = 500
        try:
            if entry is None:
                raise self._no_route(method, path)
            handler, needs_key = entry
            if self.draining and path.startswith("/v1/"):
                raise APIError(503, _DRAINING[0], code="shutting_down", headers=_DRAINING[1])
            if needs_key and self.keys is not None:
                request.key = await self.keys.authenticate(header(scope, b"authorization"), path)
            if self.audit is not None and not self.audit.healthy and path.startswith("/v1/"):
                self._refuse_unaudited(self.audit)
            status = await handler(scope, receive, send, request)
        except APIError as err:
            status = err.status
            await self._send_error(send, request, err)
        except ClientDisconnected:
            status = 499  # nginx's code for "client closed request"
        except asyncio.CancelledError:
            if not self.draining:
                raise
            status = 503  # cut at the end of the shutdown grace; a stream was told so in-band
            await self._send_error(
                send, request, APIError(503, _DRAINING[0], code="shutting_down", headers=_DRAINING[1])
            )
        except Exception:
            log.exception("request %s %s failed (request id %s)", method, path, request.request_id)
            await self._send_error(
                send,
                request,
                APIError(500, f"internal error in the gateway (request id {request.request_id})"),
            )
        finally:
            gauge.dec()
            elapsed = time.perf_counter() - request.started
            self.metrics.request_done(
                route, request.model, status, request.key_label, elapsed, route in _GENERATION
            )
            if self.audit is not None:
                self._audit(self.audit, scope, route, status, elapsed, request)

    def _refuse_unaudited(self, audit: AuditLog) -> None:
        """Fail closed: no model request is served that the audit log cannot record."""
        if self.spec.audit_fail_open:
            return
        raise APIError(
            503,
            f"{audit.reason}; requests are refused until it can be (the operator must fix it)",
            code="audit_unavailable",
            headers={"Retry-After": "5"},
        )

    @staticmethod
    def _audit(
        audit: AuditLog, scope: Scope, route: str, status: int, elapsed: float, request: _Request
    ) -> None:
        usage = request.usage or {}
        client = scope.get("client")
        key = request.key
        if request.response_hash is not None:
            request.audit["response_sha256"] = "sha256:" + request.response_hash.hexdigest()
        audit.record(
            {
                "event": "request",
                "request_id": request.request_id,
                "key_id": key.key_id if key is not None else None,
                "key": request.key_label,
                "client": client[0] if client else None,
                "method": scope["method"],
                "route": route if route != "other" else scope["path"][:200],
                "model": request.model,
                "status": status,
                "ms": round(elapsed * 1000, 1),
                "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens"),
                **request.audit,
            }
        )

    @staticmethod
    async def _send_error(send: Send, request: _Request, err: APIError) -> None:
        if request.responded:  # mid-stream: the status line is gone; the proxy ends the stream itself
            return
        extra = err.header_pairs()
        await send_bytes(
            send, err.status, err.body(), headers=[(b"x-request-id", request.request_id.encode()), *extra]
        )

    def _no_route(self, method: str, path: str) -> APIError:
        if path in self._paths or path.startswith("/v1/models/"):
            return APIError(405, f"method {method} is not allowed on {path}")
        return APIError(404, f"no route {method} {path} on this gateway", code="not_found")

    # -- plain routes -----------------------------------------------------------------------------

    async def _health(self, scope: Scope, receive: Receive, send: Send, request: _Request) -> int:
        await send_json(send, 200, {"status": "ok"})
        return 200

    async def _ready(self, scope: Scope, receive: Receive, send: Send, request: _Request) -> int:
        engines = {
            rt.config.name: {"state": rt.state.value, "kind": rt.config.kind, "restarts": rt.restarts}
            for rt in self.router.runtimes
        }
        ready = all(e["state"] == "ready" for e in engines.values()) and not self.draining
        body: dict[str, Any] = {"ready": ready, "engines": engines}
        if self.draining:
            body["draining"] = True
        if self.audit is not None:
            body["audit"] = "ok" if self.audit.healthy else self.audit.reason
            ready = ready and (self.audit.healthy or self.spec.audit_fail_open)
            body["ready"] = ready
        status = 200 if ready else 503
        await send_json(send, status, body)
        return status

    async def _openapi(self, scope: Scope, receive: Receive, send: Send, request: _Request) -> int:
        await send_json(send, 200, openapi_document(self.spec))
        return 200

    async def _metrics(self, scope: Scope, receive: Receive, send: Send, request: _Request) -> int:
        body = await asyncio.get_running_loop().run_in_executor(None, self.metrics.render)
        await send_bytes(send, 200, body, CONTENT_TYPE_LATEST.encode())
        return 200

    async def _version(self, scope: Scope, receive: Receive, send: Send, request: _Request) -> int:
        engines = {
            rt.config.name: {"kind": rt.config.kind, "version": rt.config.version}
            for rt in self.router.runtimes
        }
        await send_json(send, 200, {"airlock": __version__, "engines": engines})
        return 200

    @staticmethod
    def _model_object(name: str, route: Route) -> dict[str, Any]:
        """An OpenAI model object; ``root`` (as vLLM's) is the served model's own name, for an alias too."""
        runtime = route.runtime
        created = time.time() - time.monotonic() + (runtime.ready_since or 0)
        return {
            "id": name,
            "object": "model",
            "created": int(created),
            "owned_by": f"airlock:{runtime.config.kind}",
            "root": route.name,
            "parent": None,
        }

    async def _models(self, scope: Scope, receive: Receive, send: Send, request: _Request) -> int:
        data = [self._model_object(name, route) for name, route in self.router.listed(request.key)]
        await send_json(send, 200, {"object": "list", "data": data})
        return 200

    async def _model(self, scope: Scope, receive: Receive, send: Send, request: _Request) -> int:
        name = scope["path"].removeprefix("/v1/models/")
        route = self.router.resolve(name, request.key)
        if not route.runtime.ready:
            raise self._unavailable(route)
        await send_json(send, 200, self._model_object(name, route))
        return 200

    @staticmethod
    def _unavailable(route: Route) -> APIError:
        runtime = route.runtime
        retry_after = runtime.retry_after_s()
        # "restarting" once it has served; before that (a first start failed) it is not up yet
        doing = "restarting" if runtime.ready_since is not None else "not ready yet"
        return APIError(
            503,
            f"the model '{route.name}' is {doing}; retry in {retry_after} s",
            code="model_unavailable",
            headers={"Retry-After": str(retry_after)},
        )

    # -- generation -----------------------------------------------------------------------------

    async def _generate(self, scope: Scope, receive: Receive, send: Send, request: _Request) -> int:
        kind = _GENERATION[scope["path"]]
        raw = await read_body(scope, receive, int(self.spec.max_body_bytes))
        data = parse_json_object(raw)
        if self.audit is not None:
            self._audit_text(request, raw, data)
        validated = validate_request(
            kind, data, max_tokens_limit=self.spec.max_tokens_limit, max_n=self.spec.max_n
        )
        model = data["model"]
        route = self.router.resolve(model, request.key)
        request.model = route.name
        runtime = route.runtime
        config = runtime.config
        request.audit.update(engine=config.kind, **identity_fields(self.identities.get(route.name)))
        check_model_kind(kind, route.name, config)
        if not runtime.ready:
            raise self._unavailable(route)
        stream = bool(getattr(validated, "stream", False)) and kind in _STREAMABLE
        data["model"] = config.upstream_model
        drop_usage_only = False
        if stream:
            options = data.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                # Ask for usage so tokens can be counted; the usage-only chunk is removed again.
                data["stream_options"] = {**(options or {}), "include_usage": True}
                drop_usage_only = True
        headers = {"Content-Type": "application/json", "X-Request-Id": request.request_id}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        if self.engine_client is None:
            raise RuntimeError("the gateway was not started (ASGI lifespan)")
        lease = await self.limits.admit(request.key, kind, data) if self.limits and request.key else None
        outcome = Outcome()
        bound = (
            StreamSend(self.spec.stream_send_timeout_s, connection_abort(request._send)) if stream else None
        )
        try:
            await until_disconnect(
                receive,
                self.gates.run(
                    route.name,
                    forward,
                    self.engine_client,
                    config.base_url + scope["path"],
                    orjson.dumps(data),
                    headers,
                    send,
                    stream=stream,
                    drop_usage_only=drop_usage_only,
                    started=request.started,
                    outcome=outcome,
                    stream_send=bound,
                ),
            )
        finally:  # a client that left after the last event was still served: its tokens count
            if outcome.first_byte_s is not None:
                self.metrics.first_token(route.name, outcome.first_byte_s)
            if outcome.stalled:
                self.metrics.send_timeouts.labels(route.name).inc()
            self.metrics.tokens(route.name, request.key_label, outcome.usage)
            request.usage = outcome.usage
            if lease is not None and self.limits is not None:
                await self.limits.settle(lease, outcome.usage, started=outcome.first_byte_s is not None)
        return outcome.status

    def _audit_text(self, request: _Request, raw: bytes, data: dict[str, Any]) -> None:
        """The prompt and the answer in the audit line: their SHA-256 (the bytes as received and as
        sent), in full, or not at all (``gateway.audit_text``)."""
        mode = self.spec.audit_text
        if mode == "sha256":
            request.audit["request_sha256"] = text_digest(raw)
            request.response_hash = hashlib.sha256()
        elif mode == "full":
            request.audit["request_body"] = raw.decode("utf-8", errors="replace")
            request.response_hash = _Collect(request.audit)


class _Collect:
    """Keeps the response body for an audit line with ``audit_text: full`` (hashlib's interface)."""

    def __init__(self, into: dict[str, Any]) -> None:
        self._into = into
        self._parts: list[bytes] = []

    def update(self, data: bytes) -> None:
        self._parts.append(data)

    def hexdigest(self) -> str:
        body = b"".join(self._parts)
        self._into["response_body"] = body.decode("utf-8", errors="replace")
        return hashlib.sha256(body).hexdigest()


def create_app(
    spec: GatewaySpec,
    router: Router,
    keys: KeyCache | None,
    metrics: GatewayMetrics | None = None,
    *,
    identities: dict[str, ModelIdentity] | None = None,
    console: ConsoleConfig | None = None,
) -> Gateway:
    """Build the gateway. ``keys=None`` turns authentication off (only with an explicit ``--no-auth``).

    ``identities``: each model's weights as the audit names them (``audit.model_identities`` of the
    store's models); a model without one is audited without ``weights``."""
    if metrics is None:
        metrics = GatewayMetrics(
            lambda: [(rt.config.name, rt.config.kind, rt.ready, rt.restarts) for rt in router.runtimes]
        )
    return Gateway(spec, router, keys, metrics, identities, console)
