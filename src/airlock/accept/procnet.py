"""Sockets and the processes that hold them, read from /proc (no packet is sent).

``/proc/net/{tcp,tcp6,udp,udp6}`` list this network namespace's sockets with their inode;
``/proc/PID/fd/*`` links to ``socket:[inode]`` name the process that holds each one.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

TABLES = ("tcp", "tcp6", "udp", "udp6")


@dataclass(frozen=True)
class SocketEntry:
    proto: str  # tcp | udp
    local: tuple[str, int]
    remote: tuple[str, int]
    state: int
    inode: int


@dataclass(frozen=True)
class Process:
    pid: int
    command: str  # the command line, shortened

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})"


def _address(text: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> ("127.0.0.1", 8080): each 32-bit word of the address is little-endian."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(swapped)), int(port, 16)


def parse_table(text: str, proto: str) -> list[SocketEntry]:
    entries: list[SocketEntry] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            entries.append(
                SocketEntry(
                    proto=proto, local=_address(fields[1]), remote=_address(fields[2]),
                    state=int(fields[3], 16), inode=int(fields[9]),
                )
            )  # fmt: skip
        except ValueError:
            continue
    return entries


def sockets(proc: Path = Path("/proc")) -> list[SocketEntry]:
    found: list[SocketEntry] = []
    for table in TABLES:
        try:
            text = (proc / "net" / table).read_text()
        except OSError:
            continue
        found += parse_table(text, table.rstrip("6"))
    return found


def is_outside(host: str) -> bool:
    """An address beyond this machine: not loopback, not unspecified (a socket not connected)."""
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (address.is_loopback or address.is_unspecified)


def _short(arg: str, limit: int = 60) -> str:
    return arg if len(arg) <= limit else arg[: limit - 3] + "..."


def command_of(pid: int, proc: Path = Path("/proc")) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    text = " ".join(
        _short(" ".join(part.decode(errors="replace").split())) for part in raw.split(b"\0") if part
    )
    if not text:
        try:
            text = "[" + (proc / str(pid) / "comm").read_text().strip() + "]"
        except OSError:
            text = "?"
    return text if len(text) <= 200 else text[:197] + "..."


def holders(inodes: set[int], proc: Path = Path("/proc")) -> dict[int, Process]:
    """The process that holds each socket inode (the first found), scanning /proc/*/fd."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, Process] = {}
    if not wanted:
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(entry / "fd" / fd)
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None and inode not in found:
                found[inode] = Process(pid=int(entry.name), command=command_of(int(entry.name), proc))
        if len(found) == len(wanted):
            break
    return found


def owner_of_port(proto: str, port: int, proc: Path = Path("/proc")) -> Process | None:
    """The process whose ``proto`` socket has local port ``port`` (who sent a packet from it)."""
    inodes = {s.inode for s in sockets(proc) if s.proto == proto and s.local[1] == port and s.inode}
    found = holders(inodes, proc)
    return next(iter(found.values()), None)
