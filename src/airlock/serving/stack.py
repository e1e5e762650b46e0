"""``airlock serve``: supervised engines behind the gateway, in one event loop.

Order: check and bind the listening address (a wrong --host or --port fails before any engine
starts), build engine configs from the spec, start them all and wait until each is ready or has
failed, then listen. A failed first start is an error when ``require_all`` is set or when no model
is ready; otherwise the ready models are served and the others are retried in the background (503
for their models meanwhile, their state in /ready). On SIGINT/SIGTERM uvicorn stops listening, then
the engines stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import uvicorn

from airlock.engines.registry import build_engines
from airlock.engines.supervisor import Backoff, EngineEvent, Supervisor
from airlock.errors import ConfigError
from airlock.gateway.apikeys import KeyStore
from airlock.gateway.app import create_app
from airlock.gateway.auth import KeyCache
from airlock.gateway.routing import Router
from airlock.plan.apply import apply_plan
from airlock.settings import Settings
from airlock.spec import GatewaySpec, Spec
from airlock.store.resolve import spec_store

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

    def __post_init__(self) -> None:
        if self.port is not None:
            check_port(self.port, "--port")
        if self.host is not None:
            check_host(self.host, "--host")


@dataclass(frozen=True)
class Listening:
    url: str
    models: list[str]  # names and aliases of the models ready now
    auth: bool
    stop: Callable[[], None]  # asks the server to stop (call it on the serving loop)
    waiting: list[str] = field(default_factory=list)  # models whose first start failed: retried meanwhile


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


class _Server(uvicorn.Server):
    """uvicorn's server with our own signal handling.

    uvicorn re-raises a captured SIGTERM/SIGINT after it stops listening, which would kill the process
    before the engines are stopped; here a signal only asks the server to exit, and ``serve`` then
    stops the engines itself. ``on_started`` runs once it accepts connections, with these signal
    handlers in place: a SIGTERM right after "ready" is printed stops the server cleanly.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit and self._on_started is not None:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.ask_exit)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), not POSIX
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def ask_exit(self) -> None:
        self.should_exit = True


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
            spec.gateway,
            sock,
            keys=keys,
            aliases=aliases,
            on_listening=on_listening,
            require_all=options.require_all,
        )
    finally:
        sock.close()


async def serve_engines(
    supervisor: Supervisor,
    gateway: GatewaySpec,
    sock: socket.socket,
    *,
    keys: KeyCache | None,
    aliases: dict[str, list[str]] | None = None,
    on_listening: Callable[[Listening], None] | None = None,
    require_all: bool = True,
) -> None:
    """Start the supervisor's engines, then serve the gateway on ``sock`` until asked to stop.

    ``require_all=False`` serves what is ready when some engines fail their first start (see
    :meth:`Supervisor.start`).
    """
    try:
        await supervisor.start(require_all=require_all)
        router = Router(list(supervisor.engines.values()), aliases=aliases)
        app = create_app(gateway, router, keys)
        config = uvicorn.Config(
            app,
            http="httptools",
            loop="none",
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
            server_header=False,
            proxy_headers=False,  # X-Forwarded-* are not trusted unless a proxy is configured in front
        )
        announce = None
        if on_listening is not None:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            waiting = {rt.config.name for rt in supervisor.not_ready}
            names = [name for name, canonical in router.names() if canonical not in waiting]
            listening = Listening(
                url=f"http://{shown}:{port}",
                models=names,
                auth=keys is not None,
                stop=lambda: server.ask_exit(),
                waiting=[name for name in supervisor.engines if name in waiting],
            )
            announce = functools.partial(on_listening, listening)
        server = _Server(config, on_started=announce)
        await server.serve(sockets=[sock])
    finally:
        await supervisor.stop()
