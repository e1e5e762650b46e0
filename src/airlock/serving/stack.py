"""``airlock serve``: supervised engines behind the gateway, in one event loop.

Order: check and bind the listening address (a wrong --host or --port fails before any engine
starts), build engine configs from the spec, start them all and wait until each is ready or has
failed, then listen. A failed first start is an error when ``require_all`` is set or when no model
is ready; otherwise the ready models are served and the others are retried in the background (503
for their models meanwhile, their state in /ready). On SIGINT/SIGTERM uvicorn stops listening (new
connections are refused; with workers the parent closes its copy of the socket too), lets requests
in flight finish within ``gateway.shutdown_grace_s``, then the engines stop. With
``gateway.workers`` > 1 the gateway runs in that many worker processes on the same socket
(:mod:`airlock.serving.workers`); the engines stay here, supervised once. With
``gateway.tls_cert`` it speaks HTTPS (:mod:`airlock.serving.tls`; SIGHUP reloads the certificate).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from airlock.engines.registry import build_engines
from airlock.engines.supervisor import Backoff, EngineEvent, Supervisor
from airlock.errors import ConfigError
from airlock.gateway.apikeys import KeyStore
from airlock.gateway.app import create_app
from airlock.gateway.audit import ModelIdentity, model_identities
from airlock.gateway.auth import KeyCache
from airlock.gateway.console import ConsoleConfig
from airlock.gateway.routing import Router
from airlock.plan.apply import apply_plan
from airlock.serving.http import GatewayServer, signal_handlers, uvicorn_config
from airlock.serving.tls import ServerTls, TlsFiles
from airlock.settings import Settings
from airlock.spec import GatewaySpec, Spec
from airlock.store.resolve import spec_store
from airlock.store.store import Store

log = logging.getLogger("airlock.serving.stack")


@dataclass(frozen=True)
class ServeOptions:
    spec: Spec
    auth: bool = True
    host: str | None = None  # overrides spec.gateway.host
    port: int | None = None  # overrides spec.gateway.port; 0 picks a free one
    backoff: Backoff = field(default_factory=Backoff)
    health_interval_s: float = 5.0
    force: bool = False  # start vLLM models even where `airlock plan` says they cannot start
    require_all: bool = False  # a model that fails its first start is an error even if others are ready
    workers: int | None = None  # overrides spec.gateway.workers: gateway processes sharing the port

    def __post_init__(self) -> None:
        if self.port is not None:
            check_port(self.port, "--port")
        if self.workers is not None and not 1 <= self.workers <= 256:
            raise ConfigError(f"--workers {self.workers}: not a number of workers", hint="use 1 to 256")
        if self.host is not None:
            check_host(self.host, "--host")


@dataclass(frozen=True)
class Listening:
    url: str
    models: list[str]  # names and aliases of the models ready now
    auth: bool
    stop: Callable[[], None]  # asks the server to stop (call it on the serving loop)
    waiting: list[str] = field(default_factory=list)  # models whose first start failed: retried meanwhile
    workers: int = 1  # gateway processes serving the port


#: The next step for an address that is not this machine's.
_HOST_HINT = (
    "use --host 127.0.0.1 (this machine only), 0.0.0.0 (every interface) or an address of this machine"
)


def check_port(port: int, where: str) -> None:
    """The spec's rule (gateway.port) for a port from anywhere else: 0 to 65535, 0 picking a free one."""
    if not 0 <= port <= 65535:
        raise ConfigError(
            f"{where} {port}: not a port number", hint="use 1024 to 65535, or 0 for any free port"
        )


def check_host(host: str, where: str) -> None:
    """An address to listen on is one word; an empty one would mean every interface, so it is refused."""
    if not host.strip() or any(c.isspace() for c in host):
        raise ConfigError(f"{where} {host!r}: not an address", hint=_HOST_HINT)


def _bind_error(host: str, port: int, exc: OSError) -> ConfigError:
    """A failed bind as one line with its next step: the host and the port have different causes
    (a port out of range never gets here: :func:`check_port` refused it)."""
    where = f"cannot listen on {host}:{port}"
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"{where}: {host} is not an address this machine can resolve", hint=_HOST_HINT)
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"{where}: {host} is not an address of this machine", hint=_HOST_HINT)
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"{where}: the port is in use",
            hint="choose another --port (0 picks a free one), or stop what holds it",
        )
    if exc.errno == errno.EACCES and 0 < port < 1024:
        return ConfigError(
            f"{where}: ports below 1024 need administrator rights",
            hint="use a port of 1024 or above, e.g. --port 8000",
        )
    return ConfigError(f"{where}: {(exc.strerror or str(exc)).lower()}")


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so port 0 works and the real port is known before serving.

    Only ``host`` is bound, never a fallback; every failure is a :class:`ConfigError` that says
    whether the host or the port is wrong.
    """
    check_port(port, "port")
    check_host(host, "host")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _bind_error(host, port, exc) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(
    options: ServeOptions,
    settings: Settings,
    *,
    on_event: Callable[[EngineEvent], None] | None = None,
    on_listening: Callable[[Listening], None] | None = None,
    on_note: Callable[[str, str], None] | None = None,
) -> None:
    """Serve a spec until SIGINT/SIGTERM.

    ``on_note(model, text)`` receives the plan's start check for each model (for the user's eyes; it
    is logged at DEBUG level too).
    """
    spec = options.spec
    if not spec.models:
        raise ConfigError("the spec lists no models to serve")
    host = spec.gateway.host if options.host is None else options.host
    port = spec.gateway.port if options.port is None else options.port
    check_host(host, "--host" if options.host is not None else "gateway.host")
    gateway = spec.gateway
    if options.workers is not None:
        gateway = gateway.model_copy(update={"workers": options.workers})
    files = TlsFiles.of(gateway)
    tls = ServerTls(files) if files is not None else None  # a certificate that cannot load fails first
    # fail on a wrong address or a taken port before planning or spending a minute starting engines
    sock = bind(host, port)
    try:
        # Plan's start check: fills engine arguments the spec leaves unset, refuses what cannot start.
        spec, checks = apply_plan(spec, store=spec_store(spec, settings), force=options.force)
        for check in checks:
            log.debug("plan: %s: %s", check.model, check.message)
            if on_note is not None:
                on_note(check.model, check.message)
        supervisor = Supervisor(
            build_engines(spec, settings),
            log_dir=settings.log_dir,
            backoff=options.backoff,
            health_interval_s=options.health_interval_s,
            on_event=on_event,
        )
        keys = KeyCache(KeyStore(spec.gateway.database or settings.keys_db)) if options.auth else None
        aliases = {m.name: list(m.aliases) for m in spec.models}
        await serve_engines(
            supervisor,
            gateway,
            sock,
            keys=keys,
            aliases=aliases,
            on_listening=on_listening,
            require_all=options.require_all,
            tls=tls,
            identities=audit_identities(spec, spec_store(spec, settings)),
            console=ConsoleConfig(store=spec_store(spec, settings)),
        )
    finally:
        sock.close()


def audit_identities(spec: Spec, store: Path | None) -> dict[str, ModelIdentity]:
    """Each served model's weights as the audit names them (the digest over its files, its commit and
    bundle), from the store's record of what was installed; none for models the store lacks."""
    if store is None or spec.gateway.audit_log is None:
        return {}
    db = Store(store).load_db()
    chosen = []
    for model in spec.models:
        if model.hf is None:
            continue
        hf = model.hf
        found = [m for m in db.models if m.repo == hf.repo and hf.revision in (m.commit, m.revision)]
        if found:
            chosen.append(max(found, key=lambda m: m.installed).model_copy(update={"name": model.name}))
    return model_identities(chosen)


async def serve_engines(
    supervisor: Supervisor,
    gateway: GatewaySpec,
    sock: socket.socket,
    *,
    keys: KeyCache | None,
    aliases: dict[str, list[str]] | None = None,
    on_listening: Callable[[Listening], None] | None = None,
    require_all: bool = True,
    tls: ServerTls | None = None,
    identities: dict[str, ModelIdentity] | None = None,
    console: ConsoleConfig | None = None,
) -> None:
    """Start the supervisor's engines, then serve the gateway on ``sock`` until asked to stop:
    in this process, or in ``gateway.workers`` worker processes (:mod:`airlock.serving.workers`).

    ``require_all=False`` serves what is ready when some engines fail their first start (see
    :meth:`Supervisor.start`). ``tls``: the live TLS context (built from the gateway's files when
    not given).
    """
    if tls is None and (files := TlsFiles.of(gateway)) is not None:
        tls = ServerTls(files)
    try:
        await supervisor.start(require_all=require_all)
        router = Router(list(supervisor.engines.values()), aliases=aliases)

        def listening(stop: Callable[[], None]) -> Listening:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            waiting = {rt.config.name for rt in supervisor.not_ready}
            names = [name for name, canonical in router.names() if canonical not in waiting]
            return Listening(
                url=f"{'https' if tls is not None else 'http'}://{shown}:{port}",
                models=names,
                auth=keys is not None,
                stop=stop,
                waiting=[name for name in supervisor.engines if name in waiting],
                workers=gateway.workers,
            )

        if gateway.workers > 1:
            await _serve_workers(
                supervisor,
                gateway,
                sock,
                keys,
                aliases or {},
                identities or {},
                listening,
                on_listening,
                console.store if console is not None else None,
            )
            return
        app = create_app(gateway, router, keys, identities=identities, console=console)
        server = GatewayServer(uvicorn_config(app, tls, gateway), tls=tls)
        if on_listening is not None:
            report = on_listening
            server.on_started = lambda: report(listening(server.ask_exit))
        await server.serve(sockets=[sock])
    finally:
        await supervisor.stop()


async def _serve_workers(
    supervisor: Supervisor,
    gateway: GatewaySpec,
    sock: socket.socket,
    keys: KeyCache | None,
    aliases: dict[str, list[str]],
    identities: dict[str, ModelIdentity],
    listening: Callable[[Callable[[], None]], Listening],
    on_listening: Callable[[Listening], None] | None,
    store: Path | None,
) -> None:
    from airlock.serving.workers import WorkerPool

    target = None if keys is None else str(keys.store.db.target)
    pool = WorkerPool(
        gateway.workers,
        sock,
        supervisor,
        gateway,
        keys=target,
        aliases=aliases,
        identities=identities,
        store=store,
    )

    def stop() -> None:
        # The workers' copies of the socket close as each begins to drain; this one too, or new
        # connections would wait in its accept queue, unanswered, until the engines had stopped.
        pool.stop()
        sock.close()

    handlers: dict[signal.Signals, Callable[[], object]] = {
        signal.SIGINT: stop,
        signal.SIGTERM: stop,
        signal.SIGHUP: lambda: pool.signal_all(signal.SIGHUP),
    }
    with signal_handlers(asyncio.get_running_loop(), handlers):
        report = on_listening
        await pool.run(None if report is None else lambda: report(listening(stop)))
