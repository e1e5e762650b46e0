"""The report's plots, drawn with matplotlib and returned as inline SVG text (no files, no external assets).

matplotlib's object API (``Figure``) is used, never ``pyplot``: no global state, no GUI backend,
safe to call from any thread. Text stays text in the SVG (``svg.fonttype: none``) so the report is
small and searchable, and element ids are seeded so the same results draw the same bytes.

Each function takes one or more labelled runs, so ``bench report`` and ``bench compare`` share them::

    svg = throughput_svg([("llama-server", results)])
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.typing import LineStyleType, RcKeyType

from airlock.bench.results import BenchResults, LevelResult, Summary

Run = tuple[str, BenchResults]

_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "airlock-bench",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_PERCENTILES: tuple[tuple[str, LineStyleType, str], ...] = (
    ("p50", "-", "o"),
    ("p90", "--", "s"),
    ("p99", ":", "^"),
)


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    with rc_context(_STYLE):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return re.sub(r"^.*?(<svg\b)", r"\1", text, count=1, flags=re.DOTALL)


def _x_label(runs: Sequence[Run]) -> str:
    kinds = {lv.kind for _, r in runs for lv in r.levels}
    return "concurrent users" if kinds == {"concurrency"} else "offered rate (requests/s)"


def _x_axis(ax: Axes, runs: Sequence[Run]) -> None:
    values = sorted({lv.value for _, r in runs for lv in r.levels})
    ax.set_xlabel(_x_label(runs))
    if values and values[0] > 0 and values[-1] / values[0] >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.minorticks_off()


def _new(width: float, height: float, cols: int = 1) -> tuple[Figure, list[Axes]]:
    with rc_context(_STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, cols, squeeze=False)[0]
    return fig, list(axes)


def throughput_svg(runs: Sequence[Run]) -> str:
    """Output tokens/s and successful requests/s against the load level, one line per run."""
    fig, (tok, req) = _new(10, 3.6, 2)
    for label, results in runs:
        xs = [lv.value for lv in results.levels]
        tok.plot(xs, [lv.output_throughput for lv in results.levels], marker="o", label=label)
        req.plot(xs, [lv.request_throughput for lv in results.levels], marker="o", label=label)
        if any(lv.goodput is not None for lv in results.levels):
            req.plot(
                xs, [lv.goodput or 0.0 for lv in results.levels], marker="x", linestyle="--",
                label=f"{label}: goodput (met SLO)",
            )  # fmt: skip
    tok.set_title("Output throughput (tokens/s, server's usage)")
    tok.set_ylabel("tokens/s")
    req.set_title("Request throughput (requests/s)")
    req.set_ylabel("requests/s")
    for ax in (tok, req):
        _x_axis(ax, runs)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    return _svg(fig)


def _metric(level: LevelResult, name: str) -> Summary | None:
    summary: Summary | None = getattr(level, name)
    return summary


def latency_svg(runs: Sequence[Run]) -> str:
    """p50, p90 and p99 of TTFT, inter-token latency and end-to-end latency against the load level."""
    fig, axes = _new(12, 3.8, 3)
    titles = (("ttft", "Time to first token"), ("itl", "Inter-token latency"), ("e2e", "End-to-end latency"))
    for ax, (name, title) in zip(axes, titles, strict=True):
        for color, (label, results) in enumerate(runs):
            for shade, (pct, style, marker) in enumerate(_PERCENTILES):
                points = [
                    (lv.value, getattr(s, pct) * 1000)
                    for lv in results.levels
                    if (s := _metric(lv, name)) is not None
                ]
                if points:
                    ax.plot(
                        [p[0] for p in points], [p[1] for p in points], linestyle=style, marker=marker,
                        color=f"C{color if len(runs) > 1 else shade}",
                        label=f"{label} {pct}" if len(runs) > 1 else pct,
                    )  # fmt: skip
        ax.set_title(title)
        ax.set_ylabel("ms" if name != "itl" else "ms per token")
        _x_axis(ax, runs)
        ax.set_ylim(bottom=0)
        if len(runs) == 1:
            ax.legend(fontsize=7)
    if len(runs) > 1:  # one legend for all three: colour is the run, line style the percentile
        handles = [Line2D([], [], color=f"C{i}", label=label) for i, (label, _) in enumerate(runs)]
        handles += [
            Line2D([], [], color="0.3", linestyle=st, marker=mk, label=p) for p, st, mk in _PERCENTILES
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    return _svg(fig)


def ttft_distribution_svg(runs: Sequence[Run]) -> str:
    """The TTFT of every successful request as a cumulative distribution, one line per level."""
    fig, axes = _new(5.2 * len(runs), 3.6, len(runs))
    for ax, (label, results) in zip(axes, runs, strict=True):
        for lv in results.levels:
            values = sorted(r.ttft * 1000 for r in lv.records if r.error is None and r.ttft is not None)
            if values:
                fractions = [(i + 1) / len(values) for i in range(len(values))]
                ax.step(values, fractions, where="post", label=lv.label)
        ax.set_title(f"TTFT distribution: {label}" if len(runs) > 1 else "TTFT distribution")
        ax.set_xlabel("time to first token (ms)")
        ax.set_ylabel("share of requests")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(left=0)
        ax.legend(fontsize=8)
    return _svg(fig)
