"""Test harness: the real gateway and supervisor on a loopback port in a background thread (for sync
tests), and the CLI run in-process with its output captured (:class:`Cli`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from airlock.cli.main import run
from airlock.engines.base import EngineConfig, Launch, engine_env, free_port, internal_api_key
from airlock.engines.supervisor import Backoff, EngineEvent, Supervisor
from airlock.gateway.auth import KeyCache
from airlock.serving.stack import Listening, bind, serve_engines
from airlock.spec import GatewaySpec


@contextlib.contextmanager
def protocol_server(factory: Callable[[], asyncio.Protocol]) -> Iterator[str]:
    """A hand-written asyncio server (an engine that misbehaves on purpose) on a loopback port, in a
    thread of its own; yields its base URL."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def wait_healthy(
    url: str, proc: subprocess.Popen[bytes], *, what: str, timeout_s: float = 20.0, poll_s: float = 0.05
) -> None:
    """Wait until ``url``/health answers 200; fail naming ``what`` if it exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{what} did not become healthy in {timeout_s:.0f} s"
        time.sleep(poll_s)


def fake_engine_config(
    name: str = "fake",
    *,
    token_delay: float = 0.0,
    startup_delay: float = 0.0,
    startup_timeout_s: float = 20.0,
    argv_extra: tuple[str, ...] = (),
) -> EngineConfig:
    """An EngineConfig that launches airlock's fake engine as a child process."""
    port = free_port()
    key = internal_api_key()
    argv = (
        sys.executable, "-m", "airlock.testing.fake_engine", "--port", str(port), "--model", name,
        "--token-delay", str(token_delay), "--startup-delay", str(startup_delay), *argv_extra,
    )  # fmt: skip
    return EngineConfig(
        name=name,
        kind="fake",
        base_url=f"http://127.0.0.1:{port}",
        upstream_model=name,
        launch=Launch(argv=argv, env=engine_env({"FAKE_ENGINE_API_KEY": key})),
        api_key=key,
        startup_timeout_s=startup_timeout_s,
        version="fake 1",
    )


class GatewayThread:
    """Start engines + gateway in a thread; ``url`` once ready; ``stop()`` shuts both down."""

    def __init__(
        self,
        configs: list[EngineConfig],
        log_dir: Path,
        *,
        gateway: GatewaySpec | None = None,
        keys: KeyCache | None = None,
        aliases: dict[str, list[str]] | None = None,
        backoff: Backoff | None = None,
        health_interval_s: float = 0.5,
        health_failures: int = 3,
        health_timeout_s: float = 1.0,
        progress_every_s: float = 2.0,
        require_all: bool = True,
    ) -> None:
        self.events: list[EngineEvent] = []
        self.supervisor = Supervisor(
            configs,
            log_dir=log_dir,
            backoff=backoff or Backoff(initial_s=0.2, max_s=1.0),
            health_interval_s=health_interval_s,
            health_failures=health_failures,
            health_timeout_s=health_timeout_s,
            progress_every_s=progress_every_s,
            on_event=self.events.append,
        )
        self.gateway = gateway or GatewaySpec()
        self.keys = keys
        self.aliases = aliases
        self.require_all = require_all
        self.listening: Listening | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self._loop = uvloop.new_event_loop()
        sock = bind("127.0.0.1", 0)

        def listening(info: Listening) -> None:
            self.listening = info
            self._ready.set()

        try:
            self._loop.run_until_complete(
                serve_engines(
                    self.supervisor,
                    self.gateway,
                    sock,
                    keys=self.keys,
                    aliases=self.aliases,
                    on_listening=listening,
                    require_all=self.require_all,
                )
            )
        except BaseException as exc:
            self.error = exc
        finally:
            sock.close()
            self._ready.set()
            self._loop.close()

    def start(self, timeout: float | None = None) -> GatewayThread:
        if timeout is None:
            timeout = max(rt.config.startup_timeout_s for rt in self.supervisor.engines.values()) + 30
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the gateway did not start in time")
        if self.error is not None:
            raise self.error
        return self

    @property
    def url(self) -> str:
        assert self.listening is not None
        return self.listening.url

    def call(self, fn: Callable[[], Any]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn)

    def stop(self, timeout: float = 30.0) -> None:
        if self.listening is not None and self._thread.is_alive():
            self.call(self.listening.stop)
        self._thread.join(timeout)

    def __enter__(self) -> GatewayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


class Cli:
    """Runs the CLI in this process (as ``airlock`` would, through ``run``), capturing its output."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> Done:
        self.capsys.readouterr()
        try:
            run(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return Done(code, out, err)


def missing(what: str) -> None:
    """A tool or input a test needs is absent: fail in CI (which installs everything), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI installs it: scripts/install-system-deps.sh, make setup)")
    pytest.skip(what)


def need(binary: str) -> str:
    """The path of ``binary``; missing, the test fails in CI and is skipped elsewhere."""
    found = shutil.which(binary)
    if found is None:
        missing(f"{binary} is not installed")
        raise AssertionError  # not reached: missing() fails or skips
    return found
