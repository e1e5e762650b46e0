"""Start and stop an engine's child process: its own session, its log in a file, gone when airlock dies."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from airlock.engines.base import Launch

_PR_SET_PDEATHSIG = 1


def _death_signal_hook() -> Callable[[], None] | None:
    """On Linux, have the kernel send SIGTERM to the engine if airlock dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


_PREEXEC = _death_signal_hook()


async def spawn(launch: Launch, log_path: Path) -> asyncio.subprocess.Process:
    """Start ``launch`` in a new session, appending its stdout and stderr to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        log.write(f"\n=== airlock {stamp}: {' '.join(launch.argv)}\n".encode())
        log.flush()
        return await asyncio.create_subprocess_exec(
            *launch.argv,
            env=dict(launch.env),
            cwd=launch.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_PREEXEC,
        )


def _signal_group(process: asyncio.subprocess.Process | subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


async def terminate(process: asyncio.subprocess.Process, grace_s: float = 10.0) -> int | None:
    """SIGTERM the engine's whole process group, then SIGKILL after ``grace_s``; return its exit code."""
    if process.returncode is None:
        _signal_group(process, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            _signal_group(process, signal.SIGKILL)
            await process.wait()
    # Children that outlived their leader (vLLM's engine core, say) go with the group.
    _signal_group(process, signal.SIGKILL)
    return process.returncode


def kill_now(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the whole group: for a hung engine that no longer answers its health route."""
    _signal_group(process, signal.SIGKILL)


def log_size(log_path: Path) -> int:
    """The log's size now: where the next run's lines will start (0 for a log not yet written)."""
    try:
        return log_path.stat().st_size
    except OSError:
        return 0


def log_tail(log_path: Path, lines: int = 40, max_bytes: int = 64 * 1024, *, start: int = 0) -> str:
    """The last ``lines`` lines of an engine's log, written at or after byte ``start``.

    One log file collects every run of an engine; ``start`` (the :func:`log_size` taken before this
    run was spawned) keeps an earlier run's lines out of this run's tail. Read from the end: logs can
    be large.
    """
    try:
        with log_path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if start > size:  # the log was truncated or replaced since: all of it is this run's
                start = 0
            fh.seek(max(start, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:]).lstrip("\n")  # spawn's header starts with a blank line


def stop_group(popen: subprocess.Popen[bytes], grace_s: float = 15.0) -> int:
    """The synchronous twin of ``terminate`` for a ``subprocess.Popen`` started in its own session."""
    if popen.poll() is None:
        _signal_group(popen, signal.SIGTERM)
        try:
            popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(popen, signal.SIGKILL)
            popen.wait()
    return popen.returncode
