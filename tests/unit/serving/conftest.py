"""The gateway in a process of its own (tests/serve_procs.py), stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.spec import GatewaySpec
from serve_procs import GatewayProc, StartGateway


@pytest.fixture
def gateway_proc(tmp_path: Path) -> Iterator[StartGateway]:
    started: list[GatewayProc] = []

    def start(gateway: GatewaySpec, *, db: Path | None = None) -> GatewayProc:
        started.append(GatewayProc(gateway, tmp_path, db))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()
