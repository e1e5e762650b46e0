"""The accept commands' inputs and exit codes, run in-process (no engine, no namespace)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from airlock.accept.check import load_golden_for
from airlock.accept.golden import GoldenFile, Sampling
from airlock.bundle.format.sign import generate_keypair
from airlock.errors import ConfigError
from airlock.settings import Settings
from airlock.spec import Spec
from harness import Cli
from unit.accept.test_report import _report


@pytest.fixture
def airlock(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("AIRLOCK_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return Cli(capsys)


def test_the_golden_file_is_found_where_pack_puts_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    spec = Spec(store=store)
    with pytest.raises(ConfigError, match=r"no golden file in the store .*files/accept/golden\.json"):
        load_golden_for(spec, Settings.from_env({"HOME": str(tmp_path)}), None)
    golden = GoldenFile(
        created="2026-01-01T00:00:00Z", airlock_version="0.1.0", sampling=Sampling(), models=[], prompts=[],
        answers=[],
    )  # fmt: skip
    path = store / "files" / "accept" / "golden.json"
    path.parent.mkdir(parents=True)
    path.write_text(golden.model_dump_json())
    # found there, and refused before serving: it answers for no model of this spec
    with pytest.raises(
        ConfigError, match=f"{re.escape(str(path))}: no answers for any model this spec serves"
    ):
        load_golden_for(spec, Settings.from_env({"HOME": str(tmp_path)}), None)


def test_check_without_a_signing_key_stops_before_serving(airlock: Cli, tmp_path: Path) -> None:
    done = airlock("accept", "check", "--golden", "golden.json", "--key", "absent.key")
    assert done.returncode == 2
    assert "no signing key at absent.key" in done.stderr and "airlock signing-key create" in done.stderr


def test_record_refuses_a_bad_prompts_file(airlock: Cli, tmp_path: Path) -> None:
    (tmp_path / "golden.jsonl").write_text('{"id": "a"}\n')
    done = airlock("accept", "record", "--prompts", "golden.jsonl")
    assert done.returncode == 2
    assert "golden.jsonl:1: not a prompt" in done.stderr
    assert not (tmp_path / "golden.json").exists()


def test_verify_report_names_key_and_outcome(airlock: Cli, tmp_path: Path) -> None:
    from airlock.accept.html import render_html
    from airlock.accept.report import write_signed

    keys = generate_keypair(tmp_path / "site.key")
    report = _report()
    write_signed(tmp_path, report, render_html(report), keys.private)
    done = airlock("accept", "verify-report", "report.json", "--trust", "site.key.pub")
    assert done.returncode == 0, done.stderr
    assert (
        f"OK: report.json, report.html signed by key {keys.key_id}; outcome fail (2 of 2 checks failed)"
        in " ".join(done.stdout.split())
    )
    data = json.loads((tmp_path / "report.json").read_text())
    data["outcome"] = "pass"
    (tmp_path / "report.json").write_text(json.dumps(data))
    tampered = airlock("accept", "verify-report", "report.json", "--trust", "site.key.pub")
    assert tampered.returncode == 12
    assert "report.json: the signature does not match" in tampered.stderr


def test_verify_report_of_a_missing_file_is_bad_input_not_a_bad_signature(
    airlock: Cli, tmp_path: Path
) -> None:
    generate_keypair(tmp_path / "site.key")
    done = airlock("accept", "verify-report", "nowhere.json", "--trust", "site.key.pub")
    assert done.returncode == 2, done.stderr
    assert "nowhere.json: no such report" in done.stderr
