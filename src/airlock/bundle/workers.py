"""How many threads hash, copy and compress by default: a light module, so the CLI can show the
default in ``--help`` without importing the bundle code."""

from __future__ import annotations

import os


def default_workers() -> int:
    """One thread per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))
