"""signing-key create, pack, verify, install, ls, inventory and rebuild as a user runs them: exit codes and messages."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from airlock.cli.main import run
from bundle_helpers import make_staging


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


class Cli:
    """Runs the CLI in this process (as ``airlock`` would, through ``run``), capturing its output."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> Done:
        self.capsys.readouterr()
        try:
            run(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return Done(code, out, err)


@pytest.fixture
def airlock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("AIRLOCK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRLOCK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    return Cli(capsys)


def test_the_crossing_end_to_end(airlock: Cli, tmp_path: Path) -> None:
    staging = make_staging(tmp_path / "staging")
    home = tmp_path / "home"
    keygen = airlock("signing-key", "create")
    assert keygen.returncode == 0, keygen.stderr
    assert (home / "signing" / "airlock.key").is_file()

    packed = airlock(
        "pack", str(staging.spec), "--out", str(tmp_path / "b"), "--volume-size", "100k", "--parity", "50"
    )
    assert packed.returncode == 0, packed.stderr
    assert "signed by key" in packed.stdout and "vol-0001" in packed.stdout

    untrusted = airlock("verify", str(tmp_path / "b"))
    assert untrusted.returncode == 12 and "no key is trusted" in untrusted.stderr
    (home / "trusted").mkdir()
    shutil.copy(home / "signing" / "airlock.key.pub", home / "trusted" / "staging.pub")
    ok = airlock("verify", str(tmp_path / "b"))
    assert ok.returncode == 0, ok.stderr
    assert "bundle verified" in ok.stdout

    shutil.move(tmp_path / "b" / "vol-0002", tmp_path / "away")
    missing = airlock("verify", str(tmp_path / "b"))
    assert missing.returncode == 16 and "volume 2" in missing.stderr
    assert "parity can rebuild volume(s) 2" in missing.stderr
    rebuilt = airlock("rebuild", str(tmp_path / "b"), "--volume", "2", "--out", str(tmp_path / "new"))
    assert rebuilt.returncode == 0, rebuilt.stderr

    first = airlock("install", str(tmp_path / "b" / "vol-0001"))
    assert first.returncode == 16 and "mount volume(s)" in first.stderr
    done = airlock("install", str(tmp_path / "b"), str(tmp_path / "new"))
    assert done.returncode == 0, done.stderr
    assert "airlock serve --config" in done.stdout

    listed = airlock("ls")
    assert listed.returncode == 0 and "local/tiny" in listed.stdout and "local/smol" in listed.stdout
    as_json = json.loads(airlock("ls", "--json").stdout)
    assert {m["repo"] for m in as_json["models"]} == {"local/tiny", "local/smol"}

    inv = airlock("inventory", "--out", str(tmp_path / "inv.json"))
    assert inv.returncode == 0 and (tmp_path / "inv.json.sig").is_file()
    delta = airlock("pack", str(staging.spec), "--out", str(tmp_path / "d"), "--base", str(tmp_path / "inv.json"),
                    "--trust", str(home / "trusted" / "staging.pub"))  # fmt: skip
    assert delta.returncode == 0, delta.stderr
    assert "left out" in delta.stdout


def test_exit_codes_for_bad_bundles(airlock: Cli, tmp_path: Path) -> None:
    staging = make_staging(tmp_path / "staging")
    assert airlock("signing-key", "create", "--out", str(tmp_path / "k.key")).returncode == 0
    pub = str(tmp_path / "k.key.pub")
    assert (
        airlock(
            "pack", str(staging.spec), "--out", str(tmp_path / "b"), "--sign", str(tmp_path / "k.key")
        ).returncode
        == 0
    )
    vol = tmp_path / "b" / "vol-0001"

    (vol / "extra.txt").write_text("x")
    extra = airlock("verify", str(vol), "--trust", pub)
    assert extra.returncode == 15 and "extra.txt" in extra.stderr
    (vol / "extra.txt").unlink()

    blob = next((vol / "blobs" / "sha256").iterdir())
    data = bytearray(blob.read_bytes())
    data[0] ^= 1
    blob.write_bytes(bytes(data))
    corrupt = airlock("verify", str(vol), "--trust", pub)
    assert corrupt.returncode == 14 and blob.name in corrupt.stderr
    assert "Traceback" not in corrupt.stderr

    manifest = vol / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b"tiny", b"tinx", 1))
    tampered = airlock("verify", str(vol), "--trust", pub)
    assert tampered.returncode == 12

    assert airlock("verify", str(tmp_path), "--trust", pub).returncode == 11
    bad_size = airlock("pack", str(staging.spec), "--out", str(tmp_path / "c"), "--volume-size", "lots")
    assert bad_size.returncode == 2 and "not a size" in bad_size.stderr
