"""Start and stop the processes a benchmark needs, each on a loopback port, and wait until they answer."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from airlock.engines.base import free_port
from airlock.engines.process import stop_group

__all__ = ["Proc", "free_port"]


class Proc:
    """A child process with its output in a log file; ``stop()`` terminates it (then kills it)."""

    def __init__(
        self, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )

    def wait_http(self, url: str, timeout: float = 120.0, headers: dict[str, str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; see {self.log}")
            try:
                if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not answer {url} within {timeout} s; see {self.log}")

    def stop(self, grace_s: float = 15.0) -> None:
        stop_group(self.popen, grace_s)
