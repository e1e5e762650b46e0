"""bench's tables at the width they are given: 80 columns, ``COLUMNS``, a pipe; every number whole.

The run's table and ``bench compare`` once cut at 80 columns (an empty ``ok`` column, ``32.0 / 4…``)
and were 160 wide when piped; ``bench compare`` printed ``None`` for a setting a run did not have.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from airlock.bench.results import BenchResults, save_results
from airlock.cli import bench as bench_cli
from airlock.cli.main import app

from .conftest import synthetic_results

#: A default results name (airlock-bench-DATE-TIME): long enough to crowd a column header.
LONG = "airlock-bench-20250101-120000"


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def check_fits(text: str, width: int) -> None:
    """Nothing wider than ``width``, nothing cut with an ellipsis, no ``None``."""
    too_wide = [line for line in lines_of(text) if len(line) > width]
    assert not too_wide, f"lines wider than {width}:\n" + "\n".join(too_wide)
    assert "…" not in text and "None" not in text, text


@pytest.fixture
def width(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Give bench's stdout console a fixed width (as a terminal or ``COLUMNS`` would)."""

    def set_width(columns: int) -> None:
        monkeypatch.setattr(bench_cli, "out", Console(width=columns, highlight=False, soft_wrap=True))

    return set_width


def cli(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["bench", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def test_the_run_table_fits_80_columns_with_every_number(
    fake_url: str, tmp_path: Path, width: Callable[[int], None]
) -> None:
    width(80)
    args = ["--concurrency", "1,2", "-n", "4", "--output-tokens", "4", "--slo", "ttft=500ms,itl=50ms,e2e=10s"]
    stdout, _ = cli(fake_url, *args, "--no-html", "-o", str(tmp_path / "run"))
    check_fits(stdout, 80)
    rows = [line for line in lines_of(stdout) if line.startswith(("│ 1 user ", "│ 2 users "))]
    assert len(rows) == 4  # each level in the throughput table and the latency table
    assert all(line.split("│")[2].strip() == "4" for line in rows[:2])  # the ok column, full
    assert "goodput" in stdout and "TTFT <= 500 ms" in stdout


def render(results: BenchResults, columns: int) -> str:
    console = Console(width=columns, highlight=False, soft_wrap=True, record=True, file=io.StringIO())
    for table in bench_cli.results_tables(results, console):
        console.print(table)
    return console.export_text()


def test_a_wide_console_gets_one_table_a_narrow_one_two() -> None:
    results = synthetic_results(levels=(1, 4, 256))
    wide = render(results, 200)
    check_fits(wide, 200)
    assert wide.count("TTFT ms") == 1 and "latency, ms" not in wide
    assert "611 / 1,113" in wide  # 256 users' TTFT p50 / p99, whole
    for columns in (80, 64):
        narrow = render(results, columns)
        check_fits(narrow, columns)
        assert "latency, ms" in narrow and "1,113" in narrow and "10,428" in narrow


def results_files(tmp_path: Path, count: int) -> Iterator[str]:
    """``count`` results files with default-style (long) names; the second has a request bound, not a duration."""
    for i in range(count):
        results = synthetic_results(1 + 0.1 * i, levels=(1, 4) if i != 1 else (1,))
        if i == 1:
            info = results.info.model_copy(update={"requests_per_level": 4, "duration_per_level_s": None})
            results = BenchResults(info=info, levels=results.levels)
        path = tmp_path / f"{LONG}{i}.json"
        save_results(results, path)
        yield str(path)


@pytest.mark.parametrize("runs", [2, 5])
def test_compare_fits_80_columns_and_names_every_run(
    runs: int, tmp_path: Path, width: Callable[[int], None]
) -> None:
    width(80)
    stdout, stderr = cli("compare", *results_files(tmp_path, runs))
    check_fits(stdout, 80)
    for i, letter in enumerate("ABCDE"[:runs]):
        assert f"{letter}: {LONG}{i}" in stdout  # the legend: the file names do not fit as headers
    assert "Δ B" in stdout and "+10.0%" in stdout
    assert "None" not in stderr
    assert f"requests per level: {LONG}0: no limit; {LONG}1: 4" in stderr
    assert "duration per level" in stderr and "30 s" in stderr


def test_compare_with_short_names_uses_them(tmp_path: Path, width: Callable[[int], None]) -> None:
    save_results(synthetic_results(), tmp_path / "before.json")
    save_results(synthetic_results(1.2), tmp_path / "after.json")
    width(80)
    stdout, _ = cli("compare", str(tmp_path / "before.json"), str(tmp_path / "after.json"))
    check_fits(stdout, 80)
    assert "Δ after" in stdout and "A: " not in stdout


@pytest.mark.parametrize(("columns", "legend"), [(None, True), ("200", False)])
def test_piped_output_follows_columns_else_80(columns: str | None, legend: bool, tmp_path: Path) -> None:
    """A pipe (a CI log, ``| less``) has no terminal width: ``COLUMNS`` if set, else 80 (it was 160)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update({"COLUMNS": columns} if columns else {})
    argv = [sys.executable, "-c", "from airlock.cli.main import run; run()"]
    done = subprocess.run(
        [*argv, "bench", "compare", *results_files(tmp_path, 2)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    check_fits(done.stdout, int(columns or 80))
    assert (f"A: {LONG}0" in done.stdout) is legend  # 200 columns have room for the file names
