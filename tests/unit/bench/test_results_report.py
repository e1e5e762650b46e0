"""Results files (round trip, precise errors), the comparison, and the self-contained HTML report."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from airlock.bench.compare import compare_runs, run_labels
from airlock.bench.html_report import render_html, write_report
from airlock.bench.results import FORMAT, BenchResults, load_results, save_results
from airlock.errors import ResultsError

Make = Callable[..., BenchResults]


def test_round_trip(tmp_path: Path, make_results: Make) -> None:
    results = make_results()
    path = save_results(results, tmp_path / "sub" / "run.json")
    assert load_results(path) == results
    assert not list(path.parent.glob(".*tmp*")), "the temp file must be gone"
    data = orjson.loads(path.read_bytes())
    assert data["format"] == FORMAT
    assert data["levels"][0]["records"][0]["output_tokens"] == 8


def test_load_errors_name_the_file(tmp_path: Path, make_results: Make) -> None:
    with pytest.raises(ResultsError, match="no such results file"):
        load_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ResultsError, match=f"{bad}: not JSON"):
        load_results(bad)
    bad.write_text('{"format": "other/9"}')
    with pytest.raises(ResultsError, match="not an airlock bench results file"):
        load_results(bad)
    data = make_results().model_dump(mode="json")
    data["levels"][0]["ok"] = "many"
    bad.write_bytes(orjson.dumps(data))
    with pytest.raises(ResultsError, match=r"levels\.0\.ok"):
        load_results(bad)


def test_compare_matches_levels_and_computes_changes(make_results: Make) -> None:
    fast = make_results(1.0, levels=(1, 4))
    slow = make_results(2.0, levels=(4, 16))
    comparison = compare_runs([("fast", fast), ("slow", slow)])
    assert comparison.labels == ("fast", "slow")
    rows = {(r.level, r.metric.key): r for r in comparison.rows}
    ttft = rows[("4 users", "ttft_p50")]
    assert ttft.values[1] == pytest.approx(2 * ttft.values[0])  # type: ignore[operator]
    assert ttft.changes[0] == pytest.approx(1.0)
    assert ttft.better(ttft.changes[0]) is False  # higher latency is worse
    tput = rows[("4 users", "output_throughput")]
    assert tput.changes[0] == pytest.approx(-0.5)  # twice the time, half the tokens/s
    assert tput.better(tput.changes[0]) is False
    assert rows[("1 user", "output_throughput")].values[1] is None  # slow has no 1-user level
    assert rows[("1 user", "output_throughput")].changes == (None,)
    assert rows[("16 users", "ttft_p99")].values[0] is None
    assert next(r.level for r in comparison.rows) == "1 user"
    assert comparison.differences == ()


def test_compare_lists_settings_that_differ(make_results: Make) -> None:
    a = make_results(workload="synthetic: 100 words")
    b = make_results(workload="dataset builtin:chat (86 prompts)")
    (line,) = compare_runs([("a", a), ("b", b)]).differences
    assert line.startswith("workload: a: synthetic") and "b: dataset builtin:chat" in line
    with pytest.raises(ValueError, match="two runs"):
        compare_runs([("a", a)])


def test_settings_a_run_lacks_read_as_words_never_none(make_results: Make) -> None:
    a = make_results()
    b = make_results()
    changed = {
        "requests_per_level": 1,
        "duration_per_level_s": None,
        "arrival": "poisson",
        "ignore_eos": False,
    }
    b = b.model_copy(update={"info": b.info.model_copy(update=changed)})
    lines = compare_runs([("a", a), ("b", b)]).differences
    assert lines == (
        "--ignore-eos: a: on; b: off",
        "requests per level: a: no limit; b: 1",
        "duration per level: a: 30 s; b: no limit",
        "arrivals: a: closed loop (users); b: poisson",
    )


def test_run_labels_are_unique() -> None:
    assert run_labels(["run", "other", "run", "run"]) == ["run", "other", "run (2)", "run (3)"]


def test_report_is_self_contained(tmp_path: Path, make_results: Make) -> None:
    html = render_html([("only", make_results())])
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<svg") == 3
    assert not re.search(r"<script|<link|<img|\bsrc=|@import", html, re.IGNORECASE)
    assert not re.search(r"url\((?!#)|href=\"(?!#)", html)  # only references inside the page
    assert "&lt;warning&gt;" in html and "<warning>" not in html  # text is escaped
    assert "&lt;b&gt;busy&lt;/b&gt;" in html  # an error message from a server, escaped
    assert "Time to first token" in html and "1 user" in html and "4 users" in html
    path = write_report([("only", make_results())], tmp_path / "r.html")
    assert path.read_text(encoding="utf-8").count("<svg") == 3


def test_report_is_deterministic(make_results: Make) -> None:
    results = make_results()
    assert render_html([("x", results)]) == render_html([("x", results)])


def test_report_of_several_runs_has_the_comparison(make_results: Make) -> None:
    html = render_html([("fast", make_results(1.0)), ("slow", make_results(2.0))])
    assert "Side by side" in html and "Δ slow" in html and "+100.0%" in html
    assert "TTFT distribution: slow" in html
