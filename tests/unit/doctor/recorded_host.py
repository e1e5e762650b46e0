"""A recorded host for doctor's tests (imported as unit.doctor.recorded_host): programs answer with outputs recorded from real tools
(fixtures/), files and the environment are given, and nothing touches this machine's network."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from airlock.doctor.gpus import CSV_QUERY, XML_QUERY
from airlock.doctor.host import DiskSpace, Output

FIXTURES = Path(__file__).parent / "fixtures"
GIB = 1 << 30
DOCKER_INFO = ("docker", "info", "--format", "{{json .}}")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@dataclass
class RecordedHost:
    """A Host whose every answer is given; a program not listed is not installed."""

    commands: dict[tuple[str, ...], Output] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    disks: dict[str, DiskSpace] = field(default_factory=dict)
    taken_ports: dict[tuple[str, int], str] = field(default_factory=dict)
    reachable: set[tuple[str, int]] = field(default_factory=set)
    clock: dt.datetime = dt.datetime(2025, 3, 11, 9, 14, 2, tzinfo=dt.UTC)
    ran: list[tuple[str, ...]] = field(default_factory=list)
    connected: list[tuple[str, int]] = field(default_factory=list)

    def run(self, argv: Sequence[str]) -> Output | None:
        self.ran.append(tuple(argv))
        return self.commands.get(tuple(argv))

    def read(self, path: str) -> str | None:
        return self.files.get(path)

    def environ(self) -> Mapping[str, str]:
        return self.env

    def disk(self, path: Path) -> DiskSpace | None:
        for candidate in (path, *path.parents):
            if str(candidate) in self.disks:
                return self.disks[str(candidate)]
        return None

    def bind(self, address: str, port: int) -> str | None:
        return self.taken_ports.get((address, port))

    def connect(self, address: str, port: int) -> str | None:
        self.connected.append((address, port))
        return f"connected to {address}:{port}" if (address, port) in self.reachable else None

    def now(self) -> dt.datetime:
        return self.clock

    # -- recorded tools ---------------------------------------------------------------------------
    def with_gpus(self, model: str) -> RecordedHost:
        self.commands[CSV_QUERY] = Output(0, fixture(f"nvidia-smi-{model}.csv"))
        self.commands[XML_QUERY] = Output(0, fixture(f"nvidia-smi-{model}.xml"))
        return self

    def with_docker(self, info: str = "docker_info_nvidia.json", toolkit: bool = True) -> RecordedHost:
        self.commands[("docker", "--version")] = Output(0, "Docker version 28.2.2, build e6534b4\n")
        if info == "docker_info_daemon_down.json":
            self.commands[DOCKER_INFO] = Output(1, fixture(info), fixture("docker_info_daemon_down.stderr"))
        else:
            self.commands[DOCKER_INFO] = Output(0, fixture(info))
        if toolkit:
            self.commands[("nvidia-container-cli", "--version")] = Output(
                0, "cli-version: 1.17.4\nlib-version: 1.17.4\nbuild date: 2025-01-23T10:53+00:00\n"
            )
        return self

    def air_gapped(self) -> RecordedHost:
        self.files["/proc/net/route"] = fixture("route_local_only.txt")
        self.files["/proc/net/ipv6_route"] = fixture("ipv6_route_local_only.txt")
        self.files["/etc/resolv.conf"] = fixture("resolv_site.conf")
        self.commands[("timedatectl", "show")] = Output(0, fixture("timedatectl_synced.txt"))
        return self
