"""From request records to a level's numbers: percentiles, throughput, errors by kind, goodput.

Percentiles interpolate linearly between the closest ranks (Hyndman and Fan's type 7, numpy's
default), so ``percentile([1, 2, 3, 4], 50) == 2.5`` and results match what a reader gets from
numpy on the same records. Throughput is over the level's wall time, from the first request sent
to the last answer received; tokens are the server's usage counts, summed.

    level = summarise_level(Load("concurrency", 8), records, duration_s=31.2, slo=Slo(ttft_s=0.5))
    level.output_throughput, level.ttft.p99, level.goodput
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from airlock.bench.client import RequestRecord
from airlock.bench.options import Load, Slo
from airlock.bench.results import LevelResult, Record, Summary


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of values already sorted ascending, interpolated linearly."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not between 0 and 100")
    rank = (len(sorted_values) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def summarise(values: Iterable[float]) -> Summary | None:
    """Mean, p50, p90, p99, min and max; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return Summary(
        count=len(ordered),
        mean=math.fsum(ordered) / len(ordered),
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        min=ordered[0],
        max=ordered[-1],
    )


def meets(record: RequestRecord, slo: Slo) -> bool:
    """Whether a request succeeded within every objective set; a one-token answer has no ITL to miss."""
    if not record.ok:
        return False
    checks = (
        (slo.ttft_s, record.ttft),
        (slo.e2e_s, record.e2e),
    )
    for limit, value in checks:
        if limit is not None and (value is None or value > limit):
            return False
    itl = record.itl
    return slo.itl_s is None or itl is None or itl <= slo.itl_s


def max_in_flight(records: Iterable[RequestRecord]) -> int:
    """The most requests that were open at once, from their start and end times."""
    edges: list[tuple[float, int]] = []
    for r in records:
        edges.append((r.start, 1))
        edges.append((r.start + (r.e2e or 0.0), -1))
    edges.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def _record_out(r: RequestRecord) -> Record:
    return Record(
        start=r.start,
        e2e=r.e2e,
        ttft=r.ttft,
        itl=r.itl,
        prompt_tokens=r.prompt_tokens,
        output_tokens=r.output_tokens,
        error=r.error,
        detail=r.detail,
    )


def _mean(values: Sequence[int]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def summarise_level(
    load: Load, records: Sequence[RequestRecord], *, duration_s: float, slo: Slo
) -> LevelResult:
    """Everything reported for one level, from its records and its wall time."""
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    errors = Counter(r.error or "" for r in failed)
    examples: dict[str, str] = {}
    for r in failed:
        examples.setdefault(r.error or "", r.detail or "")
    outputs = [r.output_tokens for r in ok if r.output_tokens is not None]
    prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    per_s = (lambda n: n / duration_s) if duration_s > 0 else (lambda n: 0.0)
    good = sum(1 for r in ok if meets(r, slo)) if not slo.empty else None
    return LevelResult(
        kind=load.kind,
        value=load.value,
        label=load.label,
        duration_s=duration_s,
        requests=len(records),
        ok=len(ok),
        failed=len(failed),
        errors=dict(sorted(errors.items())),
        error_examples=examples,
        request_throughput=per_s(len(ok)),
        output_throughput=per_s(sum(outputs)),
        prompt_throughput=per_s(sum(prompts)),
        mean_prompt_tokens=_mean(prompts),
        mean_output_tokens=_mean(outputs),
        missing_usage=sum(1 for r in ok if r.output_tokens is None),
        max_in_flight=max_in_flight(records),
        ttft=summarise(r.ttft for r in ok if r.ttft is not None),
        itl=summarise(v for r in ok if (v := r.itl) is not None),
        e2e=summarise(r.e2e for r in ok if r.e2e is not None),
        gap=summarise(g for r in ok for g in r.gaps),
        goodput=per_s(good) if good is not None else None,
        slo_attainment=(good / len(records) if records else 0.0) if good is not None else None,
        records=[_record_out(r) for r in records],
    )
