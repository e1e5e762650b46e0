"""Every read the doctor makes of the host, behind one object, so tests feed recorded outputs.

:class:`RealHost` runs programs (``LC_ALL=C``, a timeout), reads files, the environment, free space,
tries to bind a port (local, no packet leaves) and, only for ``--probe``, makes one TCP connection.
It never resolves a name: a DNS lookup would be a packet to another address.
"""

from __future__ import annotations

import datetime as dt
import errno
import ipaddress
import os
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Output:
    """What a program printed and its exit status (124 when it ran past its time)."""

    returncode: int
    stdout: str
    stderr: str = ""


@dataclass(frozen=True)
class DiskSpace:
    total: int
    free: int  # available to an unprivileged writer (statvfs f_bavail)


class Host(Protocol):
    def run(self, argv: Sequence[str]) -> Output | None:
        """Run a program; None when it is not installed."""
        ...

    def read(self, path: str) -> str | None:
        """A file's text; None when it does not exist or cannot be read."""
        ...

    def environ(self) -> Mapping[str, str]: ...

    def disk(self, path: Path) -> DiskSpace | None:
        """Space on the filesystem holding ``path`` (or its nearest existing parent)."""
        ...

    def bind(self, address: str, port: int) -> str | None:
        """Try to bind a TCP socket there: None if it could, else why not."""
        ...

    def connect(self, address: str, port: int) -> str | None:
        """One TCP connection (``--probe`` only): None if it was refused or timed out, else a line
        saying it connected."""
        ...

    def now(self) -> dt.datetime: ...


def numeric_address(host: str) -> str | None:
    """``host`` as an IP address (``localhost`` is 127.0.0.1), or None for a name (never resolved)."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


class RealHost:
    """This machine. ``timeout`` bounds each program (a hung ``docker info`` must not hang doctor)."""

    def __init__(self, timeout: float = 20.0, probe_timeout: float = 3.0) -> None:
        self.timeout = timeout
        self.probe_timeout = probe_timeout

    def run(self, argv: Sequence[str]) -> Output | None:
        if shutil.which(argv[0]) is None:
            return None
        env = {**os.environ, "LC_ALL": "C"}
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=self.timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            return Output(124, "", f"{argv[0]} did not answer within {self.timeout:g} s")
        except OSError as exc:
            return Output(126, "", f"{argv[0]}: {exc.strerror}")
        return Output(done.returncode, done.stdout, done.stderr)

    def read(self, path: str) -> str | None:
        try:
            return Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def environ(self) -> Mapping[str, str]:
        return dict(os.environ)

    def disk(self, path: Path) -> DiskSpace | None:
        for candidate in (path, *path.parents):
            try:
                st = os.statvfs(candidate)
            except OSError:
                continue
            return DiskSpace(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)
        return None

    def bind(self, address: str, port: int) -> str | None:
        with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the gateway's server does
            try:
                sock.bind((address, port))
            except OSError as exc:
                return errno.errorcode.get(exc.errno or 0, "error") + f": {exc.strerror}"
        return None

    def connect(self, address: str, port: int) -> str | None:
        try:
            with socket.create_connection((address, port), timeout=self.probe_timeout):
                return f"connected to {address}:{port}"
        except OSError:
            return None

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)
