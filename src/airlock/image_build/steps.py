"""Running the build's tools (mmdebstrap, pip, umoci, commands in the staged root) with errors a user
can act on: the step's name, its exit status and the last lines it printed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from airlock.errors import ImageBuildError

_TAIL_LINES = 12

#: The environment of commands in the staged root: nothing of the host's leaks in.
ROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}


def need(tool: str, package: str) -> str:
    """The path of ``tool``, or an error naming the Debian package that has it."""
    found = shutil.which(tool)
    if found is None:
        raise ImageBuildError(f"{tool} is not installed", hint=f"apt-get install {package}")
    return found


def run(
    argv: Sequence[str],
    *,
    step: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Run one command to completion; its stdout, or :class:`ImageBuildError` with its output's tail."""
    try:
        done = subprocess.run(
            list(argv),
            env=None if env is None else {**os.environ, **env},
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise ImageBuildError(f"{step}: cannot run {argv[0]}: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr.strip() or done.stdout.strip()).splitlines()[-_TAIL_LINES:])
        raise ImageBuildError(f"{step} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def in_root(root: Path, argv: Sequence[str], *, step: str, epoch: int) -> str:
    """Run a command inside the staged root (chroot), without a network (a fresh network namespace),
    with a clean environment and SOURCE_DATE_EPOCH set (Python then writes hash-checked .pyc files)."""
    env = [f"{k}={v}" for k, v in {**ROOT_ENV, "SOURCE_DATE_EPOCH": str(epoch)}.items()]
    return run(
        ["unshare", "--net", "--fork", "chroot", str(root), "/usr/bin/env", "-i", *env, *argv],
        step=step,
        env={},
    )
