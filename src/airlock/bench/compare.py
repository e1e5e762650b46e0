"""Runs side by side: the same load levels matched across results files, with the change against the first.

Levels are matched by kind and value (``8 users`` with ``8 users``); a level one run lacks shows as
empty. Settings that differ between the runs (workload, output length, bounds, model, host) are
listed, because a faster number from a different workload is not a faster server::

    table = compare_runs([("before", a), ("after", b)])
    for row in table.rows: row.level, row.metric.title, row.values, row.changes
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from airlock.bench.results import BenchResults, LevelResult, Summary

Run = tuple[str, BenchResults]


def _pct(name: str, pct: str) -> Callable[[LevelResult], float | None]:
    def get(level: LevelResult) -> float | None:
        summary: Summary | None = getattr(level, name)
        return None if summary is None else float(getattr(summary, pct)) * 1000

    return get


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    higher_is_better: bool
    get: Callable[[LevelResult], float | None]
    digits: int = 1


METRICS: tuple[Metric, ...] = (
    Metric("output_throughput", "output tok/s", True, lambda lv: lv.output_throughput),
    Metric("request_throughput", "requests/s", True, lambda lv: lv.request_throughput, 2),
    Metric("goodput", "goodput req/s", True, lambda lv: lv.goodput, 2),
    Metric("ttft_p50", "TTFT p50 ms", False, _pct("ttft", "p50")),
    Metric("ttft_p99", "TTFT p99 ms", False, _pct("ttft", "p99")),
    Metric("itl_p50", "ITL p50 ms", False, _pct("itl", "p50"), 2),
    Metric("itl_p99", "ITL p99 ms", False, _pct("itl", "p99"), 2),
    Metric("e2e_p50", "E2E p50 ms", False, _pct("e2e", "p50"), 0),
    Metric("e2e_p99", "E2E p99 ms", False, _pct("e2e", "p99"), 0),
    Metric("failed", "failed requests", False, lambda lv: float(lv.failed), 0),
)


@dataclass(frozen=True)
class Row:
    level: str
    metric: Metric
    values: tuple[float | None, ...]

    @property
    def changes(self) -> tuple[float | None, ...]:
        """Relative change of each run against the first (0.25: 25 % more); None where undefined."""
        base = self.values[0]
        return tuple(
            None if base is None or value is None or base == 0 else (value - base) / base
            for value in self.values[1:]
        )

    def better(self, change: float | None) -> bool | None:
        """Whether a change is an improvement for this metric (None: no change to judge)."""
        if change is None or change == 0:
            return None
        return (change > 0) == self.metric.higher_is_better


@dataclass(frozen=True)
class Comparison:
    labels: tuple[str, ...]
    rows: tuple[Row, ...]
    differences: tuple[str, ...]


def _seconds(value: float | None) -> str:
    return "no limit" if value is None else f"{value:g} s"


def _cpus(count: str | None) -> str:
    if not count:
        return "CPUs unknown"
    return f"{count} CPU" if count == "1" else f"{count} CPUs"


def _settings(results: BenchResults) -> dict[str, str]:
    """The settings that make runs comparable, in words: one a run lacks reads ``no limit``,
    ``closed loop (users)`` or ``none``, never None."""
    info = results.info
    return {
        "model": info.model,
        "endpoint": info.endpoint,
        "workload": info.workload,
        "output tokens": str(info.output_tokens),
        "--ignore-eos": "on" if info.ignore_eos else "off",
        "requests per level": "no limit" if info.requests_per_level is None else str(info.requests_per_level),
        "duration per level": _seconds(info.duration_per_level_s),
        "arrivals": info.arrival or "closed loop (users)",
        "SLO": ", ".join(f"{k.upper()} <= {v * 1000:g} ms" for k, v in info.slo.items()) or "none",
        "host": f"{info.host.get('platform', 'platform unknown')}, {_cpus(info.host.get('cpus'))}",
    }


def differences(runs: Sequence[Run]) -> tuple[str, ...]:
    """One line per setting that is not the same in every run."""
    settings = [_settings(r) for _, r in runs]
    lines = []
    for key in settings[0]:
        values = [s[key] for s in settings]
        if len(set(values)) > 1:
            lines.append(
                f"{key}: " + "; ".join(f"{label}: {v}" for (label, _), v in zip(runs, values, strict=True))
            )
    return tuple(lines)


def compare_runs(runs: Sequence[Run], metrics: Sequence[Metric] = METRICS) -> Comparison:
    """Match levels across runs (in the order they first appear) and read each metric from each."""
    if len(runs) < 2:
        raise ValueError("compare needs at least two runs")
    keys: list[tuple[str, float, str]] = []
    for _, results in runs:
        for lv in results.levels:
            if (lv.kind, lv.value, lv.label) not in keys:
                keys.append((lv.kind, lv.value, lv.label))
    keys.sort(key=lambda k: (k[0], k[1]))
    rows = []
    for kind, value, label in keys:
        levels = [results.level(kind, value) for _, results in runs]
        for metric in metrics:
            values = tuple(None if lv is None else metric.get(lv) for lv in levels)
            if any(v is not None for v in values):
                rows.append(Row(level=label, metric=metric, values=values))
    return Comparison(
        labels=tuple(label for label, _ in runs), rows=tuple(rows), differences=differences(runs)
    )


def run_labels(names: Sequence[str]) -> list[str]:
    """Short, distinct labels for files: their stems, made unique with a number where they clash."""
    labels: list[str] = []
    for name in names:
        label = name
        n = 2
        while label in labels:
            label = f"{name} ({n})"
            n += 1
        labels.append(label)
    return labels
