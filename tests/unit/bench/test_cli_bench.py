"""``airlock bench`` as a user types it: the default sub-command, files written, keys from env, errors."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from airlock.cli.bench import C_RENAMED, OUTPUT_RENAMED
from airlock.cli.main import app, run
from airlock.errors import EndpointError

from .conftest import Launcher

QUICK = ["--concurrency", "1,2", "-n", "4", "--prompt-tokens", "10", "--output-tokens", "4"]


def bench(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["bench", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def bench_split(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, ["bench", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_old_spellings_work_for_one_release_with_a_note(fake_url: str, tmp_path: Path) -> None:
    """bench's --output is --out (as pack, rebuild, inventory); -c is --config elsewhere, so not --concurrency here."""
    code, out, err = bench_split(
        fake_url, "-c", "1,2", "-n", "2", "--no-html", "--output", str(tmp_path / "old")
    )
    assert code == 0, err
    assert "2 users" in out and (tmp_path / "old.json").is_file()
    assert C_RENAMED in err and OUTPUT_RENAMED in err
    code, _, err = bench_split("report", str(tmp_path / "old.json"), "--output", str(tmp_path / "old.html"))
    assert code == 0 and OUTPUT_RENAMED in err and (tmp_path / "old.html").is_file()
    code, _, err = bench_split(
        fake_url, "--concurrency", "1", "-n", "1", "--no-html", "--out", str(tmp_path / "new")
    )
    assert code == 0 and "goes in the next release" not in err
    helps = bench_split("run", "--help")[1] + bench_split("report", "--help")[1]
    assert "--output " not in helps and "-c " not in helps and "--out" in helps


def test_bench_url_runs_and_writes_json_and_html(fake_url: str, tmp_path: Path) -> None:
    code, out = bench(fake_url, *QUICK, "-o", str(tmp_path / "run.json"))
    assert code == 0, out
    assert "2 users" in out and "out tok/s" in out
    data = orjson.loads((tmp_path / "run.json").read_bytes())
    assert [lv["ok"] for lv in data["levels"]] == [4, 4]
    assert data["info"]["url"] == fake_url + "/v1"
    html = (tmp_path / "run.html").read_text(encoding="utf-8")
    assert html.count("<svg") == 3


def test_options_before_the_url_and_explicit_run(fake_url: str, tmp_path: Path) -> None:
    code, out = bench(*QUICK, "--no-html", "-o", str(tmp_path / "a"), fake_url)
    assert code == 0, out
    assert (tmp_path / "a.json").is_file() and not (tmp_path / "a.html").exists()
    code, out = bench("run", fake_url, *QUICK, "--no-html", "-o", str(tmp_path / "b"))
    assert code == 0, out and (tmp_path / "b.json").is_file()


def test_api_key_from_flag_then_airlock_then_openai_env(launch_fake: Launcher, tmp_path: Path) -> None:
    url = launch_fake(model="locked", api_key="sesame")
    args = [
        url,
        "--concurrency",
        "1",
        "-n",
        "1",
        "--output-tokens",
        "2",
        "--no-html",
        "-o",
        str(tmp_path / "k"),
    ]
    assert bench(*args, env={"OPENAI_API_KEY": "sesame", "AIRLOCK_API_KEY": ""})[0] == 0
    assert bench(*args, env={"OPENAI_API_KEY": "wrong", "AIRLOCK_API_KEY": "sesame"})[0] == 0
    assert bench(*args, "--api-key", "sesame", env={"OPENAI_API_KEY": "x", "AIRLOCK_API_KEY": "y"})[0] == 0
    with pytest.raises(EndpointError, match="HTTP 401"):
        bench(*args, env={"OPENAI_API_KEY": "wrong", "AIRLOCK_API_KEY": ""})


def test_compare_and_report(fake_url: str, tmp_path: Path) -> None:
    for name in ("before", "after"):
        code, out = bench(fake_url, *QUICK, "--no-html", "-o", str(tmp_path / name))
        assert code == 0, out
    code, out = bench(
        "compare",
        str(tmp_path / "before.json"),
        str(tmp_path / "after.json"),
        "--html",
        str(tmp_path / "c.html"),
    )
    assert code == 0, out
    assert "Δ after" in out and "output tok/s" in out and "TTFT p99 ms" in out
    assert "Side by side" in (tmp_path / "c.html").read_text(encoding="utf-8")
    code, out = bench("report", str(tmp_path / "before.json"), "-o", str(tmp_path / "r.html"))
    assert code == 0, out
    assert (tmp_path / "r.html").read_text(encoding="utf-8").count("<svg") == 3


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["http://127.0.0.1:9", "-n", "1"], 7, "cannot reach http://127.0.0.1:9/v1/models"),
        (["http://127.0.0.1:9", "--slo", "ttft=fast"], 2, "--slo ttft: 'fast' is not a duration"),
        (["http://127.0.0.1:9", "--concurrency", "1", "-r", "2"], 2, "not both"),
        (["http://127.0.0.1:9", "--slo", "ttft=500"], 2, "'ttft=500' has no unit: write ttft=500ms"),
        (["http://127.0.0.1:9", "--out", "a", "--output", "b"], 2, "give --out once"),
        (["report", "a.json"], 2, "bench report needs --out"),
        (["http://127.0.0.1:9", "--extra-body", "[1]"], 2, "--extra-body: must be a JSON object"),
        (["127.0.0.1:9"], 2, "is not an http:// or https:// URL"),
        (["compare", "only.json"], 2, "at least two results files"),
        (["compare", "a.json", "b.json"], 7, "a.json: no such results file"),
    ],
)
def test_errors_are_one_line_with_an_exit_code(
    args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run(["bench", *args])
    assert info.value.code == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
