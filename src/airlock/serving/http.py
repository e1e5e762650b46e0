"""uvicorn as airlock runs it, in one process or in each worker: the same settings, our own signals.

SIGINT/SIGTERM ask the server to stop listening and finish what it serves (the caller stops the
engines after); SIGHUP re-reads the TLS certificate (:mod:`airlock.serving.tls`). Connections are
served by :mod:`airlock.serving.protocol` (uvicorn's httptools protocol with a header timeout, a
header size cap and a cap on open connections, from ``gateway``'s keys). Once the server
accepts connections, ``gc.freeze()`` moves everything built at startup (the spec, pydantic's
schemas, the key table) out of the collector's reach, so that a full collection during a request
walks only what requests made.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from airlock.serving.protocol import (
    ConnectionLimits,
    GuardedHttpProtocol,
    default_max_connections,
    guarded_protocol,
    raise_fd_limit,
)
from airlock.serving.tls import ServerTls
from airlock.spec import GatewaySpec


@contextlib.contextmanager
def signal_handlers(
    loop: asyncio.AbstractEventLoop, handlers: dict[signal.Signals, Callable[[], object]]
) -> Iterator[None]:
    """``handlers`` on ``loop`` while the block runs, removed after; where the loop cannot take them
    (not the main thread, as in tests; not POSIX) it goes on without."""
    installed = []
    for sig, handler in handlers.items():
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def connection_limits(gateway: GatewaySpec) -> ConnectionLimits:
    """``gateway``'s limits for this process; without ``max_connections``, one from the descriptor
    limit (raised to the hard limit first)."""
    fds = raise_fd_limit()
    return ConnectionLimits(
        header_timeout_s=gateway.header_timeout_s,
        max_header_bytes=int(gateway.max_header_bytes),
        max_connections=gateway.max_connections or default_max_connections(fds),
    )


def uvicorn_config(app: Callable[..., object], tls: ServerTls | None, gateway: GatewaySpec) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=guarded_protocol(connection_limits(gateway)),
        ws="none",  # no WebSocket routes: an Upgrade request is answered as plain HTTP
        loop="none",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=gateway.shutdown_grace_s,  # then what still runs is cancelled
        server_header=False,
        proxy_headers=False,  # X-Forwarded-* are not trusted unless a proxy is configured in front
        ssl_context_factory=(lambda _config, _default: tls.context) if tls is not None else None,
    )


class GatewayServer(uvicorn.Server):
    """uvicorn's server with our own signal handling.

    uvicorn re-raises a captured SIGTERM/SIGINT after it stops listening, which would kill the process
    before the engines are stopped; here a signal only asks the server to exit, and ``serve`` then
    stops the engines itself. ``on_started`` runs once it accepts connections, with these signal
    handlers in place: a SIGTERM right after "ready" is printed stops the server cleanly.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        tls: ServerTls | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._tls = tls
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None:
            await super().startup(sockets)
        else:
            await self._startup_on(sockets)
        if self.started and not self.should_exit:
            gc.collect()
            gc.freeze()
            if self.on_started is not None:
                self.on_started()

    async def _startup_on(self, sockets: list[socket.socket]) -> None:
        """uvicorn's ``startup`` for sockets already bound (how airlock always serves), with one change:
        with TLS, the handshake must be done within the header timeout, not the event loop's 60 s, so
        that a connection that never sends its ClientHello is closed as soon as one that never sends
        its header (the protocol's guards only start after the handshake)."""
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(3)  # uvicorn's STARTUP_FAILURE
        config = self.config
        protocol_class = config.http_protocol_class

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        tls: dict[str, Any] = {}
        if config.ssl is not None:
            tls["ssl"] = config.ssl
            if isinstance(protocol_class, type) and issubclass(protocol_class, GuardedHttpProtocol):
                tls["ssl_handshake_timeout"] = protocol_class.guard.limits.header_timeout_s
        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(create_protocol, sock=sock, backlog=config.backlog, **tls)
            for sock in sockets
        ]
        self.started = True

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        handlers: dict[signal.Signals, Callable[[], object]] = {
            signal.SIGINT: self.ask_exit,
            signal.SIGTERM: self.ask_exit,
        }
        if self._tls is not None:
            handlers[signal.SIGHUP] = self._tls.reload
        with signal_handlers(loop, handlers):
            yield

    def ask_exit(self) -> None:
        """Stop: the listener closes (new connections are refused), requests in flight get
        ``gateway.shutdown_grace_s`` to finish; an app with ``drain()`` is told first, so that a
        request reaching it meanwhile is refused with 503."""
        drain = getattr(self.config.app, "drain", None)
        if callable(drain):
            drain()
        self.should_exit = True
