"""A real gateway process (``serve_engines`` over airlock's fake engine) that tests can signal: for
workers, TLS and SIGHUP, which need the process's main thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from airlock.engines.base import free_port
from airlock.spec import GatewaySpec

TESTS = Path(__file__).parent

LAUNCH = """
import sys
from pathlib import Path

import uvloop

from airlock.engines.supervisor import Backoff, Supervisor
from airlock.gateway.apikeys import KeyStore
from airlock.gateway.auth import KeyCache
from airlock.serving.stack import bind, serve_engines
from airlock.spec import GatewaySpec
from harness import fake_engine_config

gateway = GatewaySpec.model_validate_json(sys.argv[1])
db, port, logs = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
supervisor = Supervisor(
    [fake_engine_config("tiny")], log_dir=logs, backoff=Backoff(initial_s=0.2, max_s=1.0),
    health_interval_s=0.2, health_failures=2, health_timeout_s=1.0,
)
keys = KeyCache(KeyStore(Path(db))) if db else None
uvloop.run(serve_engines(supervisor, gateway, bind("127.0.0.1", port), keys=keys,
                         on_listening=lambda info: print("LISTENING", info.url, flush=True)))
print("STOPPED", flush=True)
"""


class GatewayProc:
    def __init__(self, gateway: GatewaySpec, workdir: Path, db: Path | None) -> None:
        self.port = free_port()
        logs = workdir / "logs"
        logs.mkdir(exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, gateway.model_dump_json(), str(db or ""), str(self.port), str(logs)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("LISTENING "), f"the gateway did not start: {line!r} (exit {self.proc.poll()})"
        self.url = line.split()[1]

    def children(self) -> list[int]:
        """The gateway's child processes (the engine, and each worker)."""
        found: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            found += [int(p) for p in (task / "children").read_text().split()]
        return found

    def workers(self) -> list[int]:
        return [p for p in self.children() if b"airlock.serving.workers" in _cmdline(p)]

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def wait_for(what: str, check: object, timeout_s: float = 30.0) -> None:
    """Poll ``check()`` until it is true (a bound on a wait for a process, not a timing assertion)."""
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.05)


class StartGateway(Protocol):
    def __call__(self, gateway: GatewaySpec, *, db: Path | None = None) -> GatewayProc: ...
