"""Renamed commands: ``airlock keygen`` is ``airlock signing-key create``; the old name still works
for one release, hidden, with a one-line note on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.cli.main import KEYGEN_RENAMED

AIRLOCK = [sys.executable, "-m", "airlock.cli.main"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "AIRLOCK_HOME": str(tmp_path / "home"), "AIRLOCK_CACHE": str(tmp_path / "cache")}


def airlock(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AIRLOCK, *args], env=env, capture_output=True, text=True, timeout=60)


def test_signing_key_create_writes_the_default_key_pair(env: dict[str, str], tmp_path: Path) -> None:
    made = airlock(env, "signing-key", "create")
    assert made.returncode == 0, made.stderr
    key = tmp_path / "home" / "signing" / "airlock.key"
    assert key.is_file() and key.with_suffix(".key.pub").is_file()
    assert str(key) in made.stdout.replace("\n", "")
    assert made.stderr == ""


def test_keygen_still_works_with_a_one_line_note_on_stderr(env: dict[str, str], tmp_path: Path) -> None:
    key = tmp_path / "old.key"
    made = airlock(env, "keygen", "--out", str(key), "--comment", "old-name")
    assert made.returncode == 0, made.stderr
    assert made.stderr == KEYGEN_RENAMED + "\n"
    assert KEYGEN_RENAMED == (
        "`airlock keygen` is now `airlock signing-key create`; the old name goes in the next release"
    )
    assert key.is_file()
    assert key.with_suffix(".key.pub").read_text().rstrip().endswith("old-name")
    assert made.stdout.startswith("key ") and "next release" not in made.stdout


def test_keygen_is_hidden_and_signing_key_is_listed(env: dict[str, str]) -> None:
    shown = airlock(env, "--help")
    assert shown.returncode == 0, shown.stderr
    assert "signing-key" in shown.stdout
    assert "keygen" not in shown.stdout
    group = airlock(env, "signing-key", "--help")
    assert group.returncode == 0 and "create" in group.stdout
