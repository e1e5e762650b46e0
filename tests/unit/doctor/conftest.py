"""The doctor's tests run on a recorded host (recorded_host.py): an air-gapped one with room everywhere."""

from __future__ import annotations

import pytest

from airlock.doctor.host import DiskSpace
from unit.doctor.recorded_host import GIB, RecordedHost


@pytest.fixture
def host() -> RecordedHost:
    """An air-gapped host with room everywhere, no GPU and no container runtime (tests add them)."""
    h = RecordedHost().air_gapped()
    h.disks["/"] = DiskSpace(500 * GIB, 400 * GIB)
    h.disks["/dev/shm"] = DiskSpace(32 * GIB, 32 * GIB)
    return h
