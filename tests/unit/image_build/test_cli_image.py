"""``airlock image build`` refuses wrong input in one line, before any building starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import Cli


@pytest.fixture
def airlock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("AIRLOCK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRLOCK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.setenv("COLUMNS", "250")
    return Cli(capsys)


@pytest.fixture
def inputs(tmp_path: Path) -> list[str]:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    server = tmp_path / "llama-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    return ["--model", str(model), "--llama-server", str(server)]


def test_a_bad_tag_is_one_line_and_exit_2(airlock: Cli, inputs: list[str], tmp_path: Path) -> None:
    done = airlock("image", "build", "--out", str(tmp_path / "img"), "--tag", "no spaces", *inputs)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "error: --tag 'no spaces': not a tag (letters, digits, '.', '_' and '-', at most 128, not starting with '.' or '-')"
    )
    assert not (tmp_path / "img").exists()


def test_an_existing_out_is_refused(airlock: Cli, inputs: list[str], tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    done = airlock("image", "build", "--out", str(tmp_path / "img"), *inputs)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"error: --out {tmp_path / 'img'} already exists (give a new folder, or remove this one)"
    )
    assert "Traceback" not in done.stderr


def test_a_bad_source_date_epoch_is_named(
    airlock: Cli, inputs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    done = airlock("image", "build", "--out", str(tmp_path / "img"), *inputs)
    assert done.returncode == 2
    assert "SOURCE_DATE_EPOCH='yesterday': not a number of seconds" in done.stderr


def test_a_model_that_is_not_gguf_is_named(airlock: Cli, inputs: list[str], tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"PK\x03\x04 a zip, not a model")
    done = airlock("image", "build", "--out", str(tmp_path / "img"), *inputs)
    assert done.returncode == 2
    assert (
        done.stderr.splitlines()[-1]
        == f"error: model {tmp_path / 'm.gguf'}: not a GGUF file (it begins b'PK\\x03\\x04')"
    )


def test_a_llama_server_that_is_not_executable_is_named(
    airlock: Cli, inputs: list[str], tmp_path: Path
) -> None:
    (tmp_path / "llama-server").chmod(0o644)
    done = airlock("image", "build", "--out", str(tmp_path / "img"), *inputs)
    assert done.returncode == 2
    assert f"llama-server {tmp_path / 'llama-server'}: not an executable file" in done.stderr
    assert "scripts/build-llama-server.sh" in done.stderr
