"""uvicorn as airlock runs it, in one process or in each worker: the same settings, our own signals.

SIGINT/SIGTERM ask the server to stop listening and finish what it serves (the caller stops the
engines after); SIGHUP re-reads the TLS certificate (:mod:`airlock.serving.tls`). Once the server
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
from collections.abc import Callable, Iterator

import uvicorn

from airlock.serving.tls import ServerTls


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


def uvicorn_config(app: Callable[..., object], tls: ServerTls | None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="httptools",
        loop="none",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
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
        await super().startup(sockets)
        if self.started and not self.should_exit:
            gc.collect()
            gc.freeze()
            if self.on_started is not None:
                self.on_started()

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
        self.should_exit = True
