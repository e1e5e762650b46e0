"""The HTML report: one self-contained file (inline CSS and SVG, no scripts, no external assets).

It can be mailed, archived beside the JSON, or opened on a machine with no network. For one run it
shows the settings, a table per level, errors by kind and three plots (throughput against load,
latency percentiles, the TTFT distribution); for several runs, the same plots overlaid and the
comparison table::

    html = render_html([("llama-server", results)])
    write_report([("a", a), ("b", b)], Path("compare.html"))
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

from airlock.bench.compare import Comparison, compare_runs
from airlock.bench.results import BenchResults, LevelResult, Summary
from airlock.common.fileio import write_atomic
from airlock.common.words import counted

Run = tuple[str, BenchResults]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#1d2330;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #dde;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{padding:.3em .7em;border-bottom:1px solid #e4e6ee;text-align:right;white-space:nowrap}
th{background:#f3f4f8;font-weight:600}td.l,th.l{text-align:left}
.meta td{text-align:left}.meta td:first-child{color:#5a6275;padding-right:1.5em}
.warn{background:#fff4e0;border-left:4px solid #f0a020;padding:.5em 1em;margin:.5em 0}
.good{color:#137333}.bad{color:#b3261e}.muted{color:#7a8090}
figure{margin:1em 0}svg{max-width:100%;height:auto}
"""


def _ms(summary: Summary | None, pct: str) -> str:
    return "–" if summary is None else f"{getattr(summary, pct) * 1000:,.1f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _meta(results: BenchResults) -> str:
    info = results.info
    bounds = []
    if info.requests_per_level is not None:
        bounds.append(counted(info.requests_per_level, "request"))
    if info.duration_per_level_s is not None:
        bounds.append(f"{info.duration_per_level_s:g} s")
    calibration = (
        f"{info.calibration.words} words ≈ {info.calibration.intercept + info.calibration.per_word * info.calibration.words:.0f}"
        f" prompt tokens (server's count: {info.calibration.intercept:.1f} + {info.calibration.per_word:.3f}/word)"
        if info.calibration
        else "–"
    )
    rows = [
        ("endpoint", f"{info.url} ({info.endpoint})"),
        ("model", info.model),
        (
            "server",
            (info.server or "–") + ("" if info.keep_alive else " (closes connections: one per request)"),
        ),
        ("workload", info.workload),
        ("prompt sizing", calibration),
        ("max output tokens", f"{info.output_tokens}" + (" (ignore_eos)" if info.ignore_eos else "")),
        ("bound per level", " or ".join(bounds) + (", whichever comes first" if len(bounds) > 1 else "")),
        ("arrival", info.arrival or "closed loop (each user waits for its answer)"),
        ("SLO", ", ".join(f"{k} ≤ {v * 1000:g} ms" for k, v in info.slo.items()) or "–"),
        ("warm-up requests", str(info.warmup)),
        ("extra body", str(info.extra_body) if info.extra_body else "–"),
        ("host", ", ".join(f"{k} {v}" for k, v in info.host.items())),
        ("run", f"{info.started_at} → {info.finished_at}, airlock {info.airlock_version}"),
    ]
    cells = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta">{cells}</table>'


_LEVEL_HEAD = (
    "load", "requests", "failed", "req/s", "output tok/s", "prompt tok/s", "mean out tokens",
    "TTFT p50", "TTFT p90", "TTFT p99", "ITL p50", "ITL p99", "E2E p50", "E2E p90", "E2E p99",
    "goodput req/s", "SLO met",
)  # fmt: skip


def _level_row(lv: LevelResult) -> str:
    slo = "–" if lv.slo_attainment is None else f"{lv.slo_attainment:.1%}"
    cells = (
        str(lv.requests), str(lv.failed), _num(lv.request_throughput, 2), _num(lv.output_throughput),
        _num(lv.prompt_throughput), _num(lv.mean_output_tokens), _ms(lv.ttft, "p50"), _ms(lv.ttft, "p90"),
        _ms(lv.ttft, "p99"), _ms(lv.itl, "p50"), _ms(lv.itl, "p99"), _ms(lv.e2e, "p50"), _ms(lv.e2e, "p90"),
        _ms(lv.e2e, "p99"), _num(lv.goodput, 2), slo,
    )  # fmt: skip
    return f'<tr><td class="l">{escape(lv.label)}</td>' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _levels_table(results: BenchResults) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{escape(h)}</th>' for i, h in enumerate(_LEVEL_HEAD))
    body = "".join(_level_row(lv) for lv in results.levels)
    note = '<p class="muted">Latencies in milliseconds; ITL per token. Throughput over each level\'s wall time.</p>'
    return f"<table><tr>{head}</tr>{body}</table>{note}"


def _errors_table(results: BenchResults) -> str:
    rows = [
        f'<tr><td class="l">{escape(lv.label)}</td><td class="l">{escape(kind)}</td><td>{count}</td>'
        f'<td class="l">{escape(lv.error_examples.get(kind, ""))}</td></tr>'
        for lv in results.levels
        for kind, count in lv.errors.items()
    ]
    if not rows:
        return "<p>No request failed.</p>"
    head = '<tr><th class="l">load</th><th class="l">kind</th><th>count</th><th class="l">first message</th></tr>'
    return f"<table>{head}{''.join(rows)}</table>"


def _comparison_table(comparison: Comparison) -> str:
    labels = comparison.labels
    head = '<tr><th class="l">load</th><th class="l">metric</th>' + "".join(
        f"<th>{escape(label)}</th>" for label in labels
    )
    head += "".join(f"<th>Δ {escape(label)}</th>" for label in labels[1:]) + "</tr>"
    rows = []
    for row in comparison.rows:
        values = "".join(f"<td>{_num(v, row.metric.digits)}</td>" for v in row.values)
        changes = ""
        for change in row.changes:
            better = row.better(change)
            css = "" if better is None else ("good" if better else "bad")
            changes += f'<td class="{css}">{"–" if change is None else f"{change:+.1%}"}</td>'
        rows.append(
            f'<tr><td class="l">{escape(row.level)}</td><td class="l">{escape(row.metric.title)}</td>{values}{changes}</tr>'
        )
    notes = "".join(f'<div class="warn">Not the same: {escape(d)}</div>' for d in comparison.differences)
    return notes + f"<table>{head}{''.join(rows)}</table>"


def render_html(runs: Sequence[Run]) -> str:
    """The whole report for one run, or several side by side."""
    from airlock.bench import plots  # matplotlib loads only when a report is drawn

    if not runs:
        raise ValueError("a report needs at least one run")
    title = (
        f"airlock bench: {runs[0][1].info.model}"
        if len(runs) == 1
        else "airlock bench: " + " vs ".join(label for label, _ in runs)
    )
    parts = [f"<h1>{escape(title)}</h1>"]
    if len(runs) > 1:
        parts += ["<h2>Side by side</h2>", _comparison_table(compare_runs(runs))]
    for label, results in runs:
        heading = f" — {escape(label)}" if len(runs) > 1 else ""
        parts.append(f"<h2>Settings{heading}</h2>{_meta(results)}")
        parts += [f'<div class="warn">{escape(w)}</div>' for w in results.warnings]
        parts.append(f"<h2>Results per level{heading}</h2>{_levels_table(results)}")
        parts.append(f"<h2>Errors{heading}</h2>{_errors_table(results)}")
    parts += [
        "<h2>Throughput against load</h2>",
        f"<figure>{plots.throughput_svg(runs)}</figure>",
        "<h2>Latency percentiles</h2>",
        f"<figure>{plots.latency_svg(runs)}</figure>",
        "<h2>Time to first token, every request</h2>",
        f"<figure>{plots.ttft_distribution_svg(runs)}</figure>",
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )


def write_report(runs: Sequence[Run], path: Path) -> Path:
    write_atomic(path, render_html(runs).encode("utf-8"))
    return path
