"""``serve --workers N``: N gateway processes on one port, the engines supervised once.

The parent (``airlock serve``) binds the port, starts and supervises the engines exactly as with one
process, then starts N workers (``python -m airlock.serving.workers``). Each inherits the listening
socket (one accept queue that every worker takes connections from: a connection waiting there is not
lost when a worker dies, and port 0 works unchanged) and reads a boot message on its stdin: the
gateway's settings, the engines' configs (where each listens, its internal key), the aliases and the
key database. The parent then writes every change of the engines' states (ready, restarting, their
restarts and Retry-After) to each worker's stdin within ``STATE_EVERY_S``; a worker only mirrors
those states, it never starts or probes an engine. When its stdin ends (the parent is gone) a worker
stops.

Shared between the workers:

- keys, limits and usage: the key database (``gateway/state.py``), exact across processes;
- metrics: prometheus_client's multiprocess mode, each worker writing its series to files in a
  directory of the run (``PROMETHEUS_MULTIPROC_DIR``) and whichever worker answers ``/metrics``
  adding all of them up: one view; the engines' series come from the answering worker's mirror;
- the audit log: one hash-chained file that every worker appends to in batches under ``flock``
  (``gateway/audit.py``);
- per-engine limits: ``engine_concurrency`` and ``engine_queue`` are split between the workers
  (rounded up), each worker enforcing its share.

A worker that dies is started again (after 0.5 s, doubling to 10 s while it keeps dying young). On
SIGINT/SIGTERM the parent closes its copy of the listening socket, sends SIGTERM to every worker,
waits until each has finished what it was serving (each cuts what is left at
``gateway.shutdown_grace_s``; the parent waits that and 10 s more, ``STOP_WAIT_S`` at least, then
SIGKILL), then stops the engines. SIGHUP is passed to every worker (each reloads its TLS
certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from airlock.engines.base import EngineConfig, Launch
from airlock.engines.supervisor import EngineRuntime, EngineState, Supervisor
from airlock.errors import AirlockError
from airlock.gateway.audit import ModelIdentity
from airlock.spec import GatewaySpec

log = logging.getLogger("airlock.serving.workers")

STATE_EVERY_S = 0.1  # how often the parent looks for an engine state to pass on
STOP_WAIT_S = 60.0  # how long a stopping worker may take to finish what it serves (at least)
_STARTED = b"airlock-worker-started\n"


class EngineWire(BaseModel):
    name: str
    kind: str
    base_url: str
    upstream_model: str
    argv: list[str]  # read by the gateway (does it serve embeddings?); never run by a worker
    api_key: str | None
    version: str

    @classmethod
    def of(cls, config: EngineConfig) -> EngineWire:
        return cls(
            name=config.name,
            kind=config.kind,
            base_url=config.base_url,
            upstream_model=config.upstream_model,
            argv=list(config.launch.argv) if config.launch is not None else [],
            api_key=config.api_key,
            version=config.version,
        )

    def config(self) -> EngineConfig:
        launch = Launch(argv=tuple(self.argv), env={}) if self.argv else None
        return EngineConfig(
            name=self.name,
            kind=self.kind,
            base_url=self.base_url,
            upstream_model=self.upstream_model,
            launch=launch,
            api_key=self.api_key,
            version=self.version,
        )


class EngineStateWire(BaseModel):
    state: EngineState
    restarts: int
    ready_since: float | None  # time.monotonic(): one clock for every process of the machine
    retry_at: float
    last_error: str | None


class Boot(BaseModel):
    index: int
    workers: int
    listen_fd: int
    gateway: GatewaySpec
    engines: list[EngineWire]
    aliases: dict[str, list[str]]
    keys: str | None  # the key database (a path or a postgresql:// URL); None: --no-auth
    states: dict[str, EngineStateWire]
    identities: dict[str, ModelIdentity] = {}  # the served models' weights, for the audit
    store: str | None = None  # the model store, for the console's store view and digests


class Update(BaseModel):
    states: dict[str, EngineStateWire]


def snapshot(runtimes: list[EngineRuntime]) -> dict[str, EngineStateWire]:
    return {
        rt.config.name: EngineStateWire(
            state=rt.state,
            restarts=rt.restarts,
            ready_since=rt.ready_since,
            retry_at=rt.retry_at,
            last_error=rt.last_error,
        )
        for rt in runtimes
    }


def apply_states(runtimes: dict[str, EngineRuntime], states: dict[str, EngineStateWire]) -> None:
    for name, wire in states.items():
        rt = runtimes.get(name)
        if rt is not None:
            rt.state = wire.state
            rt.restarts = wire.restarts
            rt.ready_since = wire.ready_since
            rt.retry_at = wire.retry_at
            rt.last_error = wire.last_error


def worker_share(value: int, workers: int) -> int:
    """Each worker's part of a per-engine limit (at least 1 when the limit is)."""
    return math.ceil(value / workers) if value else 0


# -- the parent ---------------------------------------------------------------------------------


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.listening = asyncio.Event()
        self.failures = 0  # deaths in a row, each soon after its start


class WorkerPool:
    """N worker processes on ``sock``, fed the supervisor's engine states; :meth:`run` until ``stop``."""

    def __init__(
        self,
        count: int,
        sock: socket.socket,
        supervisor: Supervisor,
        gateway: GatewaySpec,
        *,
        keys: str | None,
        aliases: dict[str, list[str]],
        identities: dict[str, ModelIdentity] | None = None,
        store: Path | None = None,
    ) -> None:
        self.count = count
        self.identities = identities or {}
        self.store = store
        self.sock = sock
        self.runtimes = list(supervisor.engines.values())
        self.gateway = gateway
        self.keys = keys
        self.aliases = aliases
        self.workers = [_Worker(i) for i in range(count)]
        self.stop_event = asyncio.Event()
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="airlock-metrics-"))
        self._states = snapshot(self.runtimes)

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc is not None and w.proc.returncode is None]

    def _boot(self, index: int) -> bytes:
        return (
            Boot(
                index=index,
                workers=self.count,
                listen_fd=self.sock.fileno(),
                gateway=self.gateway,
                engines=[EngineWire.of(rt.config) for rt in self.runtimes],
                aliases=self.aliases,
                keys=self.keys,
                states=self._states,
                identities=self.identities,
                store=str(self.store) if self.store is not None else None,
            )
            .model_dump_json()
            .encode()
        )

    async def _spawn(self, worker: _Worker) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "airlock.serving.workers",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            pass_fds=(self.sock.fileno(),), env=env,
        )  # fmt: skip
        worker.proc = proc
        worker.started_at = time.monotonic()
        worker.listening.clear()
        assert proc.stdin is not None
        proc.stdin.write(self._boot(worker.index) + b"\n")

    async def _read_stdout(self, worker: _Worker, proc: asyncio.subprocess.Process) -> None:
        """The worker's "listening" line; anything else it prints goes on to our stdout."""
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            if line == _STARTED:
                worker.listening.set()
            else:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()

    async def _keep(self, worker: _Worker) -> None:
        """Run one worker, and start it again each time it dies, until the pool stops."""
        while not self.stop_event.is_set():
            await self._spawn(worker)
            proc = worker.proc
            assert proc is not None
            reader = asyncio.create_task(self._read_stdout(worker, proc))
            code = await proc.wait()
            await reader
            self._mark_dead(proc.pid)
            if self.stop_event.is_set():
                return
            lived = time.monotonic() - worker.started_at
            worker.failures = 0 if lived > 30 else worker.failures + 1
            delay = min(10.0, 0.5 * 2 ** max(0, worker.failures - 1))
            log.warning(
                "gateway worker %d (pid %d) exited with code %s after %.0f s; starting it again in %.1f s",
                worker.index, proc.pid, code, lived, delay,
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), delay)

    def _mark_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]  # its live gauges leave the sums

    async def _feed(self) -> None:
        """Pass each change of the engines' states to every worker."""
        while True:
            await asyncio.sleep(STATE_EVERY_S)
            states = snapshot(self.runtimes)
            if states == self._states:
                continue
            self._states = states
            message = Update(states=states).model_dump_json().encode() + b"\n"
            for worker in self.workers:
                proc = worker.proc
                if proc is None or proc.returncode is not None or proc.stdin is None:
                    continue
                with contextlib.suppress(ConnectionError, RuntimeError):  # dying: its restart reads the boot
                    proc.stdin.write(message)

    def signal_all(self, sig: signal.Signals) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    async def run(self, on_listening: Callable[[], None] | None = None) -> None:
        """Start the workers, call ``on_listening`` once each listens, serve until :meth:`stop`."""
        keepers = [asyncio.create_task(self._keep(w), name=f"worker:{w.index}") for w in self.workers]
        feeder = asyncio.create_task(self._feed())
        try:
            await self._wait_listening(keepers)
            if on_listening is not None:
                on_listening()
            await self.stop_event.wait()
        finally:
            self.stop_event.set()
            feeder.cancel()
            self.signal_all(signal.SIGTERM)
            await self._reap(keepers)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    async def _wait_listening(self, keepers: list[asyncio.Task[None]]) -> None:
        """Every worker's first start; one that dies before it listens fails the serve."""
        for worker in self.workers:
            while not worker.listening.is_set():
                proc = worker.proc
                if proc is not None and proc.returncode is not None:
                    raise AirlockError(
                        f"gateway worker {worker.index} exited with code {proc.returncode} before it "
                        "listened (its error is above)",
                        hint="fix what it reports, or run with --workers 1 to see it in one process",
                    )
                if self.stop_event.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.listening.wait(), 0.05)

    async def _reap(self, keepers: list[asyncio.Task[None]]) -> None:
        procs = [w.proc for w in self.workers if w.proc is not None]
        wait_s = max(STOP_WAIT_S, self.gateway.shutdown_grace_s + 10.0)  # each cuts its own at the grace
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), wait_s)
        except TimeoutError:
            log.warning("gateway workers still serving after %.0f s: killed", wait_s)
            self.signal_all(signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in procs))
        for task in keepers:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)


# -- a worker -----------------------------------------------------------------------------------


async def _follow(
    reader: asyncio.StreamReader, runtimes: dict[str, EngineRuntime], on_eof: Callable[[], None]
) -> None:
    while line := await reader.readline():
        apply_states(runtimes, Update.model_validate_json(line).states)
    on_eof()  # the parent is gone: nobody supervises the engines any more


async def worker_main() -> None:
    from airlock.gateway.apikeys import KeyStore
    from airlock.gateway.app import create_app
    from airlock.gateway.auth import KeyCache
    from airlock.gateway.console import ConsoleConfig
    from airlock.gateway.routing import Router
    from airlock.gateway.state import is_postgres
    from airlock.serving.http import GatewayServer, uvicorn_config
    from airlock.serving.tls import ServerTls, TlsFiles

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    boot = Boot.model_validate_json(await reader.readline())
    gateway = boot.gateway.model_copy(
        update={
            "engine_concurrency": worker_share(boot.gateway.engine_concurrency, boot.workers),
            "engine_queue": worker_share(boot.gateway.engine_queue, boot.workers),
        }
    )
    runtimes = {e.name: EngineRuntime(config=e.config(), log_path=Path(os.devnull)) for e in boot.engines}
    apply_states(runtimes, boot.states)
    router = Router(list(runtimes.values()), aliases=boot.aliases)
    keys = None
    if boot.keys is not None:
        keys = KeyCache(KeyStore(boot.keys if is_postgres(boot.keys) else Path(boot.keys)))
    files = TlsFiles.of(gateway)
    tls = ServerTls(files) if files is not None else None
    sock = socket.socket(fileno=boot.listen_fd)

    def started() -> None:
        sys.stdout.buffer.write(_STARTED)
        sys.stdout.flush()

    server = GatewayServer(
        uvicorn_config(
            create_app(
                gateway,
                router,
                keys,
                identities=boot.identities,
                console=ConsoleConfig(store=Path(boot.store) if boot.store is not None else None),
            ),
            tls,
            gateway,
        ),
        tls=tls,
        on_started=started,
    )
    follower = loop.create_task(_follow(reader, runtimes, server.ask_exit))
    try:
        await server.serve(sockets=[sock])
    finally:
        follower.cancel()


def main() -> None:
    import uvloop

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        uvloop.run(worker_main())
    except AirlockError as exc:
        print(f"airlock: gateway worker: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
