"""The gateway in a process of its own (tests/serve_procs.py), stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.spec import GatewaySpec
from serve_procs import GatewayProc


@pytest.fixture
def gateway_proc(tmp_path: Path) -> Iterator[type[GatewayProc]]:
    started: list[GatewayProc] = []

    class Started(GatewayProc):
        def __init__(self, gateway: GatewaySpec, workdir: Path = tmp_path, db: Path | None = None) -> None:
            super().__init__(gateway, workdir, db)
            started.append(self)

    yield Started
    for proc in started:
        proc.stop()
