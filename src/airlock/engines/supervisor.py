"""Supervise engines: start them, wait until ready, restart with backoff when they die or hang, stop them.

States of one engine::

    starting ──ready──> ready ──exits / health fails──> restarting ──ready──> ready
        │                                                   │ (backoff 1 s, 2 s, 4 s ... 30 s, forever)
        └──exits or times out before ready──> failed        └──stop()──> stopped

A failure of the *first* start is an error for the caller (``serve`` reports the reason and the
engine's log tail of that start) when ``start(require_all=True)``, or when no engine at all became
ready. With ``require_all=False`` the engines that did start are served and the others are retried
in the background, like an engine that died later: the supervisor repairs them while the gateway
answers 503 with Retry-After for their models. Remote engines are not restarted, only watched; one
whose connection is refused (nothing listens there) fails its first start at once, not after its
startup timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import aiohttp

from airlock.engines.base import EngineConfig
from airlock.engines.probe import Unreachable, check_health, check_ready
from airlock.engines.process import kill_now, log_size, log_tail, spawn, terminate
from airlock.errors import EngineStartError


class EngineState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 30.0
    reset_after_s: float = 60.0  # a run at least this long starts the backoff over

    def delay(self, attempt: int) -> float:
        return float(min(self.max_s, self.initial_s * self.factor ** max(0, attempt)))


@dataclass(frozen=True)
class EngineEvent:
    engine: str
    state: EngineState
    message: str
    elapsed_s: float = 0.0
    progress: bool = False  # a periodic "still starting" note (the log's last line), not a state change


@dataclass
class EngineRuntime:
    """The live state of one engine; owned and mutated by the supervisor only."""

    config: EngineConfig
    log_path: Path
    state: EngineState = EngineState.STARTING
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    last_error: str | None = None
    retry_at: float = 0.0
    ready_since: float | None = None
    attempt: int = 0
    log_start: int = 0  # where this run's lines start in the log (one log file collects every run)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    def retry_after_s(self) -> int:
        """Seconds a client should wait before trying again (for the Retry-After header)."""
        return max(1, math.ceil(self.retry_at - time.monotonic()))


def _log_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".log"


class Supervisor:
    def __init__(
        self,
        configs: list[EngineConfig],
        *,
        log_dir: Path,
        backoff: Backoff | None = None,
        health_interval_s: float = 5.0,
        health_failures: int = 3,
        health_timeout_s: float = 5.0,
        progress_every_s: float = 2.0,
        on_event: Callable[[EngineEvent], None] | None = None,
    ) -> None:
        self.engines: dict[str, EngineRuntime] = {
            c.name: EngineRuntime(config=c, log_path=log_dir / _log_name(c.name)) for c in configs
        }
        self.backoff = backoff or Backoff()
        self.health_interval_s = health_interval_s
        self.progress_every_s = progress_every_s  # a slow start reports its log's last line this often
        self.health_failures = health_failures
        self.health_timeout_s = health_timeout_s
        self._on_event = on_event
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False

    # -- public -------------------------------------------------------------------------------

    async def start(self, *, require_all: bool = True) -> None:
        """Start every engine and wait until each is ready or has failed its first start.

        A failed start stops all engines and raises its error when ``require_all`` is set or when no
        engine is ready at all. Otherwise the ready engines are served and the failed ones are retried
        in the background (their state tells which: see :attr:`not_ready`).
        """
        self._session = aiohttp.ClientSession()
        runtimes = list(self.engines.values())
        results = await asyncio.gather(*(self._first_start(rt) for rt in runtimes), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        unexpected = [e for e in errors if not isinstance(e, EngineStartError)]
        if unexpected or (errors and (require_all or len(errors) == len(runtimes))):
            await self.stop()
            raise (unexpected or errors)[0]
        for rt, result in zip(runtimes, results, strict=True):
            watch = self._watch(rt) if result is None else self._retry_first_start(rt)
            rt._task = asyncio.create_task(watch, name=f"watch:{rt.config.name}")

    @property
    def not_ready(self) -> list[EngineRuntime]:
        """The engines not ready now (after a partial :meth:`start`: those retried in the background)."""
        return [rt for rt in self.engines.values() if not rt.ready]

    async def stop(self) -> None:
        self._stopping = True
        for rt in self.engines.values():
            if rt._task is not None:
                rt._task.cancel()
        for rt in self.engines.values():
            if rt._task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await rt._task
        await asyncio.gather(*(self._stop_process(rt) for rt in self.engines.values()))
        for rt in self.engines.values():
            rt.state = EngineState.STOPPED
        if self._session is not None:
            await self._session.close()
            self._session = None

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The last lines of the engine's latest run (not of earlier runs in the same log file)."""
        rt = self.engines[name]
        return log_tail(rt.log_path, lines, start=rt.log_start)

    # -- internals ------------------------------------------------------------------------------

    def _emit(
        self, rt: EngineRuntime, state: EngineState, message: str, started: float | None = None
    ) -> None:
        rt.state = state
        if self._on_event is not None:
            elapsed = time.monotonic() - started if started is not None else 0.0
            self._on_event(EngineEvent(rt.config.name, state, message, elapsed))

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Supervisor.start() was not called")
        return self._session

    async def _first_start(self, rt: EngineRuntime) -> None:
        started = time.monotonic()
        self._emit(rt, EngineState.STARTING, f"starting {rt.config.kind} ({rt.config.version})")
        try:
            await self._launch_and_wait(rt)
        except EngineStartError as exc:
            rt.last_error = exc.message
            self._emit(rt, EngineState.FAILED, exc.message, started)
            raise
        self._emit(rt, EngineState.READY, f"ready at {rt.config.base_url}", started)

    async def _launch_and_wait(self, rt: EngineRuntime) -> None:
        config = rt.config
        if config.launch is not None:
            rt.log_start = log_size(rt.log_path)
            try:
                rt.process = await spawn(config.launch, rt.log_path)
            except OSError as exc:
                raise EngineStartError(
                    f"engine {config.name!r}: cannot start {config.launch.argv[0]}: {exc}"
                ) from exc
        started = time.monotonic()
        deadline = started + config.startup_timeout_s
        delay = 0.05
        next_note = started + self.progress_every_s
        while True:
            proc = rt.process
            if proc is not None and proc.returncode is not None:
                raise EngineStartError(
                    f"engine {config.name!r} ({config.kind}) exited with code {proc.returncode} before it was ready; "
                    f"log: {rt.log_path}",
                    log_tail=log_tail(rt.log_path, start=rt.log_start),
                )
            reason = await check_ready(self.session, config, timeout=5.0)
            if reason is None:
                rt.ready_since = time.monotonic()
                return
            if proc is None and isinstance(reason, Unreachable):  # a remote URL: nothing to wait for
                raise EngineStartError(
                    f"engine {config.name!r} (remote): {reason}",
                    hint="start the server at engine.url, or correct the URL in the spec",
                )
            if time.monotonic() > deadline:
                if proc is not None:
                    await terminate(proc, grace_s=5.0)
                raise EngineStartError(
                    f"engine {config.name!r} ({config.kind}) was not ready after {config.startup_timeout_s:g} s: "
                    f"{reason}",
                    log_tail=log_tail(rt.log_path, start=rt.log_start) if proc is not None else "",
                    hint="raise engine.startup_timeout_s if it is only slow",
                )
            if proc is not None and time.monotonic() >= next_note and self._on_event is not None:
                next_note = time.monotonic() + self.progress_every_s
                last = log_tail(rt.log_path, lines=1, start=rt.log_start).strip()
                self._on_event(
                    EngineEvent(config.name, rt.state, last[:160], time.monotonic() - started, progress=True)
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    async def _watch(self, rt: EngineRuntime) -> None:
        if rt.process is None:
            await self._watch_remote(rt)
            return
        while not self._stopping:
            process = rt.process
            monitor = asyncio.create_task(self._monitor_health(rt, process))
            try:
                code = await process.wait()
            finally:
                monitor.cancel()
            if self._stopping:
                return
            lived = time.monotonic() - (rt.ready_since or time.monotonic())
            rt.attempt = 0 if lived >= self.backoff.reset_after_s else rt.attempt + 1
            rt.last_error = f"exited with code {code}"
            await self._restart(rt)

    async def _retry_first_start(self, rt: EngineRuntime) -> None:
        """An engine whose first start failed while others are served: keep trying, then watch it."""
        if rt.process is None and rt.config.launch is None:
            rt.retry_at = time.monotonic() + self.health_interval_s
            await self._watch_remote(rt)
            return
        rt.attempt = 0
        await self._restart(rt)
        if not self._stopping:
            await self._watch(rt)

    async def _restart(self, rt: EngineRuntime) -> None:
        while not self._stopping:
            rt.restarts += 1
            delay = self.backoff.delay(rt.attempt)
            rt.retry_at = time.monotonic() + delay + min(rt.config.startup_timeout_s, 5.0)
            self._emit(rt, EngineState.RESTARTING, f"{rt.last_error}; restarting in {delay:g} s")
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                await self._launch_and_wait(rt)
            except EngineStartError as exc:
                rt.last_error = exc.message
                rt.attempt += 1
                continue
            self._emit(rt, EngineState.READY, f"ready again at {rt.config.base_url}", started)
            return

    async def _monitor_health(self, rt: EngineRuntime, process: asyncio.subprocess.Process) -> None:
        """Kill an engine whose health route fails ``health_failures`` times in a row (hung, not dead)."""
        failures = 0
        while process.returncode is None:
            await asyncio.sleep(self.health_interval_s)
            reason = await check_health(self.session, rt.config, timeout=self.health_timeout_s)
            failures = failures + 1 if reason else 0
            if failures >= self.health_failures:
                rt.last_error = f"health failed {failures} times: {reason}"
                self._emit(rt, EngineState.RESTARTING, f"{rt.last_error}; killing it")
                kill_now(process)
                return

    async def _watch_remote(self, rt: EngineRuntime) -> None:
        while not self._stopping:
            await asyncio.sleep(self.health_interval_s)
            reason = await check_ready(self.session, rt.config, timeout=self.health_timeout_s)
            if reason and rt.ready:
                rt.last_error = reason
                rt.retry_at = time.monotonic() + self.health_interval_s
                self._emit(rt, EngineState.RESTARTING, f"unavailable: {reason}")
            elif reason and not rt.ready:
                rt.last_error = reason
                rt.retry_at = time.monotonic() + self.health_interval_s
            elif reason is None and not rt.ready:
                again = rt.ready_since is not None
                rt.ready_since = time.monotonic()
                self._emit(
                    rt, EngineState.READY, "available again" if again else f"ready at {rt.config.base_url}"
                )

    async def _stop_process(self, rt: EngineRuntime) -> None:
        if rt.process is not None:
            await terminate(rt.process)
