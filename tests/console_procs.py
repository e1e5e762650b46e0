"""What the console's browser tests share (Chromium: tests/integration/test_console_browser.py,
Firefox: test_console_firefox.py): `airlock serve` on the fake engine with an admin and a user key,
a wait that looks again while the page is mid-render, and the page's views through either driver."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def wait(what: str, check: Callable[[], T | None], timeout_s: float = 30.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except Exception:  # the page is mid-render (a stale element): look again
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@dataclass(frozen=True)
class Page:
    """The console page through a driver's ``find_element(by, value)`` (Selenium's or Marionette's,
    each with its own ``By``)."""

    find: Callable[[str, str], Any]
    by_id: str
    by_css: str

    def visible(self, element_id: str) -> bool:
        return bool(self.find(self.by_id, element_id).is_displayed())

    def table_text(self, table_id: str) -> str:
        return str(self.find(self.by_id, table_id).text)

    def go(self, view: str) -> None:
        """Open a view from the menu and wait until it shows."""
        self.find(self.by_css, f'a[data-view="{view}"]').click()
        wait(f"the {view} view", lambda: self.visible(f"view-{view}"))


@contextmanager
def serving(tmp: Path) -> Iterator[tuple[str, str, str, Path]]:
    """The fake engine and `airlock serve` in front of it: (url, admin key, user key, audit log)."""
    from airlock.engines.base import free_port
    from airlock.gateway.apikeys import KeyStore

    home = tmp / "home"
    keys = KeyStore(home / "keys.db")
    admin = keys.create("ops", scopes=["admin"])[1]
    user = keys.create("alice", models=["tiny"])[1]
    port = free_port()
    engine = subprocess.Popen([sys.executable, "-m", "airlock.testing.fake_engine", "--port", str(port),
                               "--model", "tiny", "--ttft", "0.05", "--token-delay", "0.01"])  # fmt: skip
    audit = tmp / "audit" / "audit.jsonl"
    spec = tmp / "airlock.yaml"
    spec.write_text(yaml.safe_dump({
        "models": [{"name": "tiny", "aliases": ["default"],
                    "engine": {"kind": "remote", "url": f"http://127.0.0.1:{port}/v1", "model": "tiny"}}],
        "gateway": {"audit_log": str(audit), "audit_flush_ms": 20, "console_session_ttl_s": 900},
    }))  # fmt: skip
    env = {**os.environ, "AIRLOCK_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "airlock.cli.main", "serve", "--config", str(spec), "--port", "0"],
                            env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            line = proc.stderr.readline()
            lines.append(line)
            if m := re.search(r"ready: (http://127\.0\.0\.1:\d+)/v1", line):
                url = m.group(1)
        yield url, admin, user, audit
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        engine.terminate()
        engine.wait(30)
