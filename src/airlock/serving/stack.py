"""``airlock serve``: supervised engines behind the gateway, in one event loop.

Order: build engine configs from the spec, start them all and wait until ready (a first start that
fails is an error), then listen. On SIGINT/SIGTERM uvicorn stops listening, then the engines stop.
"""

from __future__ import annotations

import asyncio
import contextlib
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


@dataclass(frozen=True)
class Listening:
    url: str
    models: list[str]
    auth: bool
    stop: Callable[[], None]  # asks the server to stop (call it on the serving loop)


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so port 0 works and the real port is known before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror}", hint="choose another --port"
        ) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server with our own signal handling.

    uvicorn re-raises a captured SIGTERM/SIGINT after it stops listening, which would kill the process
    before the engines are stopped; here a signal only asks the server to exit, and ``serve`` then
    stops the engines itself.
    """

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
) -> None:
    """Serve a spec until SIGINT/SIGTERM."""
    spec = options.spec
    if not spec.models:
        raise ConfigError("the spec lists no models to serve")
    # Plan's start check: fills engine arguments the spec leaves unset, refuses what cannot start.
    spec, checks = apply_plan(spec, store=spec_store(spec, settings), force=options.force)
    for check in checks:
        log.info("plan: %s: %s", check.model, check.message)
    host = options.host or spec.gateway.host
    port = spec.gateway.port if options.port is None else options.port
    sock = bind(host, port)  # fail on a taken port before spending a minute starting engines
    try:
        supervisor = Supervisor(
            build_engines(spec, settings),
            log_dir=settings.log_dir,
            backoff=options.backoff,
            health_interval_s=options.health_interval_s,
            on_event=on_event,
        )
        keys = KeyCache(KeyStore(settings.keys_db)) if options.auth else None
        aliases = {m.name: list(m.aliases) for m in spec.models}
        await serve_engines(
            supervisor, spec.gateway, sock, keys=keys, aliases=aliases, on_listening=on_listening
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
) -> None:
    """Start the supervisor's engines, then serve the gateway on ``sock`` until asked to stop."""
    try:
        await supervisor.start()
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
        server = _Server(config)
        if on_listening is not None:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            names = [name for name, _ in router.names()]
            on_listening(
                Listening(
                    url=f"http://{shown}:{port}", models=names, auth=keys is not None, stop=server.ask_exit
                )
            )
        await server.serve(sockets=[sock])
    finally:
        await supervisor.stop()
