"""The acceptance report as one self-contained HTML page: inline CSS, no script, no external resource
(a change record's attachment must open on a machine with no network). Every text is escaped."""

from __future__ import annotations

from html import escape

from airlock.accept.compare import first_difference
from airlock.accept.report import AcceptReport, AnswerResult

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ddd;padding:.3em .5em;text-align:left;
vertical-align:top}th{background:#f4f4f4}.pass{color:#0a7a2f;font-weight:600}.fail{color:#b00020;
font-weight:700}.skip{color:#777}pre{white-space:pre-wrap;word-break:break-word;margin:0;
font:12px/1.4 ui-monospace,monospace}mark{background:#ffd6d6}.outcome{font-size:1.3em;padding:.4em .8em;
border-radius:4px;display:inline-block}.outcome.pass{background:#e2f5e8}.outcome.fail{background:#fde3e6}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}dd{margin:0}
"""


def _status(status: str) -> str:
    return f'<span class="{escape(status)}">{escape(status)}</span>'


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _marked(text: str, at: int | None) -> str:
    """``text`` with the first differing character on, marked."""
    if at is None:
        return escape(text)
    return escape(text[:at]) + "<mark>" + escape(text[at:]) + "</mark>"


def _answer_row(answer: AnswerResult) -> str:
    got = answer.got
    at = None if got is None else first_difference(answer.expected, got)
    shown = "<em>no answer</em>" if got is None else f"<pre>{_marked(got, at)}</pre>"
    return (
        f"<tr><td>{escape(answer.model)}</td><td>{escape(answer.prompt)}</td>"
        f"<td>{_status('pass' if answer.passed else 'fail')}<br>{escape(answer.mode)}</td>"
        f"<td>{escape(answer.detail)}</td><td><pre>{_marked(answer.expected, at)}</pre></td><td>{shown}</td>"
        f"<td>{_num(answer.ttft_s)}</td><td>{_num(answer.tokens_per_s, 1)}</td></tr>"
    )


def render_html(report: AcceptReport) -> str:
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>airlock acceptance: {escape(report.outcome)}</title><style>{_CSS}</style></head><body>",
        "<h1>airlock acceptance report</h1>",
        f'<p class="outcome {escape(report.outcome)}">{escape(report.outcome.upper())}: '
        f"{len(report.failed)} of {len(report.checks)} checks failed</p>",
        "<dl>",
    ]
    for term, value in (
        ("created", report.created),
        ("airlock", report.airlock_version),
        ("spec", report.spec),
        ("golden file", f"{report.golden} (recorded {report.golden_created})"),
        ("comparison", report.comparison),
        ("floors", f"time to first token ≤ {report.floors.max_ttft_s:g} s, "
                   f"≥ {report.floors.min_tokens_per_s:g} tokens/s (medians)"),
        ("names looked up", str(report.dns_lookups)),
    ):  # fmt: skip
        parts.append(f"<dt>{escape(term)}</dt><dd>{escape(value)}</dd>")
    parts.append("</dl><h2>Checks</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>")
    parts += [
        f"<tr><td>{escape(c.name)}</td><td>{_status(c.status)}</td><td>{escape(c.detail)}</td></tr>"
        for c in report.checks
    ]
    parts.append("</table><h2>Models</h2><table><tr><th>model</th><th></th><th>weights</th>")
    parts.append("<th>engine</th><th>version</th><th>hardware</th></tr>")
    for label, records in (("recorded", report.recorded), ("here", report.here)):
        parts += [
            f"<tr><td>{escape(m.name)}</td><td>{label}</td><td><code>{escape(m.digest)}</code></td>"
            f"<td>{escape(m.engine)}</td><td>{escape(m.engine_version)}</td><td>{escape(m.hardware)}</td></tr>"
            for m in records
        ]
    parts.append("</table><h2>Figures</h2><table><tr><th>model</th><th>answers</th>")
    parts.append(
        "<th>TTFT median (s)</th><th>TTFT max (s)</th><th>tokens/s median</th><th>tokens/s min</th></tr>"
    )
    parts += [
        f"<tr><td>{escape(f.model)}</td><td>{f.answers}</td><td>{_num(f.ttft_s_median)}</td>"
        f"<td>{_num(f.ttft_s_max)}</td><td>{_num(f.tokens_per_s_median, 1)}</td>"
        f"<td>{_num(f.tokens_per_s_min, 1)}</td></tr>"
        for f in report.figures
    ]
    parts.append("</table><h2>Egress</h2>")
    if report.egress:
        parts.append("<table><tr><th>seen by</th><th>process</th><th>destination</th><th>at (s)</th></tr>")
        parts += [
            f"<tr><td>{escape(e.kind)}</td><td>{escape(str(e.pid) if e.pid is not None else '?')} "
            f"<code>{escape(e.process or 'unknown')}</code></td><td>{escape(e.destination)} ({escape(e.proto)})</td>"
            f"<td>{e.at_s:.2f}</td></tr>"
            for e in report.egress
        ]
        parts.append("</table>")
    else:
        parts.append("<p>No attempt to reach the outside was seen.</p>")
    parts.append("<h2>Answers</h2><p>The first differing character on is <mark>marked</mark>.</p>")
    parts.append("<table><tr><th>model</th><th>prompt</th><th>result</th><th>detail</th><th>expected</th>")
    parts.append("<th>got</th><th>TTFT (s)</th><th>tokens/s</th></tr>")
    parts += [_answer_row(a) for a in report.answers]
    parts.append("</table></body></html>\n")
    return "".join(parts)
