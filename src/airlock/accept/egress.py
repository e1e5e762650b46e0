"""No egress, proven: the acceptance run's namespace, and every attempt to leave it, recorded.

``airlock accept check`` runs the gateway and every engine under ``unshare --net --mount``. Inside,
:func:`prepare_namespace` brings up loopback and a veth pair with ARP off (``al-out`` -> ``al-sink``)
holding the default routes for IPv4 and IPv6, so that a connect to any outside address does not fail
at once but sends its first packet out ``al-out``, where nothing answers; and bind-mounts a
resolv.conf naming 127.0.0.1, where :class:`~airlock.accept.dns.RefusingResolver` logs and refuses
every query. Three witnesses record attempts, each naming the process by its socket:

- the resolver: every name looked up (``dns``);
- :class:`PacketWatch`: an ``AF_PACKET`` socket on ``al-out`` sees every TCP, UDP or ICMP packet
  sent towards the outside (``packet``), its process found by the socket's local port;
- :class:`SocketWatch`: /proc/net/{tcp,udp}[6] polled for sockets connected to an outside address
  (``connect``).

Nothing can leave: the namespace has no link to the host's network. Outside such a namespace
:func:`prepare_namespace` refuses to touch anything (it checks that loopback is the only interface).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from airlock.accept.dns import Lookup
from airlock.accept.procnet import Process, holders, is_outside, owner_of_port, sockets
from airlock.common.types import FrozenModel
from airlock.errors import ConfigError

OUT_DEVICE = "al-out"
SINK_DEVICE = "al-sink"
OUT_V4 = "10.255.255.1/32"
OUT_V6 = "fdff:ffff::1/128"
ETH_P_ALL = 0x0003
#: systemd-resolved's varlink/stub sockets (nss-resolve) and nscd's: hidden inside the mount namespace.
HIDDEN_RESOLVERS = ("/run/systemd/resolve", "/run/nscd", "/var/run/nscd")
_PROTOS = {6: "tcp", 17: "udp", 1: "icmp"}


class EgressEvent(FrozenModel):
    kind: Literal["dns", "packet", "connect"]
    proto: str  # dns | tcp | udp | icmp
    destination: str  # "huggingface.co (A)" or "203.0.113.5:443"
    pid: int | None = None
    process: str | None = None  # its command line, when the socket could be traced to it
    at_s: float = 0.0  # seconds into the run

    def describe(self) -> str:
        who = f"pid {self.pid} ({self.process})" if self.pid is not None else "an unknown process"
        if self.kind == "dns":
            return f"{who} looked up {self.destination}"
        return f"{who} tried to reach {self.destination} ({self.proto})"


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


def interface_names(dev: str) -> list[str]:
    """The interfaces of this network namespace, from /proc/self/net/dev (/sys/class/net shows the
    namespace sysfs was mounted in, not ours)."""
    return sorted(line.split(":", 1)[0].strip() for line in dev.splitlines()[2:] if ":" in line)


def prepare_namespace(workdir: Path) -> None:
    """Loopback, the ``al-out`` veth with the default routes, and resolv.conf naming 127.0.0.1.

    Refuses unless loopback is the only interface (a fresh ``unshare --net`` namespace), so that it
    can never change the host's own network."""
    interfaces = interface_names(Path("/proc/self/net/dev").read_text())
    if interfaces != ["lo"]:
        raise ConfigError(
            f"not a fresh network namespace (interfaces: {', '.join(interfaces)}); refusing to change it",
            hint="this runs under `unshare --net --mount`, which `airlock accept check` starts",
        )
    _ip("link", "set", "lo", "up")
    _ip("link", "add", OUT_DEVICE, "type", "veth", "peer", "name", SINK_DEVICE)
    for device in (OUT_DEVICE, SINK_DEVICE):
        _ip("link", "set", device, "arp", "off")
        _ip("link", "set", device, "up")
    _ip("addr", "add", OUT_V4, "dev", OUT_DEVICE)
    _ip("-6", "addr", "add", OUT_V6, "dev", OUT_DEVICE, "nodad")
    _ip("route", "add", "default", "dev", OUT_DEVICE)
    _ip("-6", "route", "add", "default", "dev", OUT_DEVICE)
    resolv = workdir / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    done = subprocess.run(
        ["mount", "--bind", str(resolv), "/etc/resolv.conf"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ConfigError(f"cannot bind-mount a resolv.conf over /etc/resolv.conf: {done.stderr.strip()}")
    # Local resolver daemons answer over Unix sockets, which a network namespace does not cut, and would
    # look names up from the host's namespace: hide their sockets, so lookups fall back to resolv.conf.
    for folder in HIDDEN_RESOLVERS:
        if Path(folder).is_dir():
            hidden = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "none", folder],
                                    capture_output=True, text=True, check=False)  # fmt: skip
            if hidden.returncode != 0:
                raise ConfigError(f"cannot hide the resolver sockets in {folder}: {hidden.stderr.strip()}")


def parse_frame(frame: bytes) -> tuple[str, str, int, int] | None:
    """An Ethernet frame's (proto, destination address, destination port, source port), for IPv4 and
    IPv6 carrying TCP, UDP or (IPv4) ICMP; None for anything else (ICMPv6 is the kernel's own
    neighbour discovery)."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    ip = frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20:
        header = (ip[0] & 0x0F) * 4
        proto_no, dest = ip[9], socket.inet_ntop(socket.AF_INET, ip[16:20])
        payload = ip[header:]
    elif ethertype == 0x86DD and len(ip) >= 40:
        proto_no, dest = ip[6], socket.inet_ntop(socket.AF_INET6, ip[24:40])
        payload = ip[40:]
    else:
        return None
    proto = _PROTOS.get(proto_no)
    if proto is None or (proto == "icmp" and ethertype != 0x0800):
        return None
    if proto == "icmp" or len(payload) < 4:
        return proto, dest, 0, 0
    source_port, dest_port = struct.unpack("!HH", payload[:4])
    return proto, dest, dest_port, source_port


def _where(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port else shown


class Witness:
    """Every attempt to leave, deduplicated by process, kind and destination, in the order seen."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._seen: set[tuple[int | None, str, str]] = set()
        self.events: list[EgressEvent] = []

    def add(self, kind: str, proto: str, destination: str, process: Process | None) -> None:
        key = (None if process is None else process.pid, kind, destination)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
            self.events.append(
                EgressEvent.model_validate(
                    {
                        "kind": kind, "proto": proto, "destination": destination,
                        "pid": None if process is None else process.pid,
                        "process": None if process is None else process.command,
                        "at_s": round(self._clock() - self._start, 3),
                    }
                )
            )  # fmt: skip

    def lookup(self, found: Lookup) -> None:
        self.add("dns", "dns", f"{found.name} ({found.qtype})", found.process)


class _Loop:
    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> _Loop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        raise NotImplementedError


class PacketWatch(_Loop):
    """Every packet sent out ``device`` (towards the outside), with the process that sent it."""

    def __init__(self, witness: Witness, device: str = OUT_DEVICE) -> None:
        super().__init__("accept-packets")
        self.witness = witness
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((device, 0))
        self.sock.settimeout(0.2)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, address = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] != socket.PACKET_OUTGOING:
                continue
            parsed = parse_frame(frame)
            if parsed is None or not is_outside(parsed[1]):
                continue
            proto, dest, port, source_port = parsed
            process = owner_of_port(proto, source_port) if source_port else None
            self.witness.add("packet", proto, _where(dest, port), process)


class SocketWatch(_Loop):
    """Sockets connected to an outside address, polled from /proc/net every ``interval_s``."""

    def __init__(self, witness: Witness, interval_s: float = 0.05) -> None:
        super().__init__("accept-sockets")
        self.witness = witness
        self.interval_s = interval_s
        self._owners: dict[int, Process] = {}

    def poll(self) -> None:
        outside = [s for s in sockets() if s.inode and is_outside(s.remote[0]) and s.remote[1]]
        if not outside:
            return
        # an inode seen before keeps its process: one that has just exited has no fd left to find
        unknown = {s.inode for s in outside if s.inode not in self._owners}
        self._owners.update(holders(unknown))
        for entry in outside:
            self.witness.add("connect", entry.proto, _where(*entry.remote), self._owners.get(entry.inode))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.poll()
