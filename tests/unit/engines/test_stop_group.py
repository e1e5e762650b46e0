"""stop_group: SIGTERM to the whole process group, SIGKILL after the grace period, children included."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from airlock.engines.process import stop_group

# A parent that starts a child and then ignores SIGTERM (the child does not): only SIGKILL ends the parent.
_STUBBORN = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # after the child starts (it would inherit the ignore)
print(child.pid, flush=True)  # only now: the test's SIGTERM must not arrive before the ignore
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for whoever reaps orphans here."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_terminates_a_group_that_obeys() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    assert stop_group(proc, grace_s=10) == -15


def test_kills_after_the_grace_period_and_takes_the_children() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _STUBBORN], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    started = time.monotonic()
    assert stop_group(proc, grace_s=0.5) == -9
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_a_finished_process_is_left_alone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait()
    assert stop_group(proc) == 0
