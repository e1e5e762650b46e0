"""Statistics on synthetic timing records, checked exactly (and against numpy for the percentiles)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from airlock.bench.client import RequestRecord
from airlock.bench.options import Load, Slo
from airlock.bench.stats import max_in_flight, meets, percentile, summarise, summarise_level


def ok(
    start: float, ttft: float, tokens: int, itl: float, *, prompt: int = 10, tail: float = 0.0
) -> RequestRecord:
    """A successful request: first token at ``ttft``, then one every ``itl``, the stream closing ``tail`` later."""
    chunks = tuple(ttft + i * itl for i in range(tokens))
    return RequestRecord(
        start=start,
        e2e=chunks[-1] + tail,
        ttft=ttft,
        prompt_tokens=prompt,
        output_tokens=tokens,
        chunk_times=chunks,
    )


def failed(start: float, kind: str, detail: str = "", e2e: float = 0.01) -> RequestRecord:
    return RequestRecord(start=start, e2e=e2e, error=kind, detail=detail)


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([1.0, 2.0, 3.0, 4.0], 90, 3.7),
        ([5.0], 99, 5.0),
        ([float(i) for i in range(1, 101)], 99, 99.01),
        ([float(i) for i in range(1, 11)], 90, 9.1),
    ],
)
def test_percentile_interpolates_linearly(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == pytest.approx(expected, abs=1e-12)


def test_percentile_matches_numpy_default() -> None:
    rng = random.Random(7)
    for n in (1, 2, 3, 10, 99, 1000):
        values = sorted(rng.lognormvariate(0, 1) for _ in range(n))
        for p in (50, 90, 99):
            assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)), rel=1e-12)


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_summarise_exact() -> None:
    summary = summarise([0.4, 0.1, 0.3, 0.2])
    assert summary is not None
    assert (summary.count, summary.min, summary.max) == (4, 0.1, 0.4)
    assert summary.mean == pytest.approx(0.25)
    assert summary.p50 == pytest.approx(0.25)
    assert summary.p90 == pytest.approx(0.37)
    assert summary.p99 == pytest.approx(0.397)
    assert summarise([]) is None


def test_itl_spreads_decode_time_over_tokens_after_the_first() -> None:
    record = ok(0.0, ttft=0.5, tokens=11, itl=0.03, tail=0.2)
    assert record.itl == pytest.approx(0.03)
    assert record.gaps == pytest.approx([0.03] * 10)
    assert ok(0.0, ttft=0.5, tokens=1, itl=0.03).itl is None
    assert failed(0.0, "timeout").itl is None


def test_itl_uses_server_token_count_when_chunks_carry_several_tokens() -> None:
    # 3 chunks carrying 9 tokens over 0.4 s: 0.05 s per token, not 0.2 s per chunk.
    record = RequestRecord(start=0, e2e=1.0, ttft=0.2, output_tokens=9, chunk_times=(0.2, 0.4, 0.6))
    assert record.itl == pytest.approx(0.05)


def test_level_numbers_exact() -> None:
    # Ten successful requests with TTFTs of 0.1 .. 1.0 s, 5 tokens at 20 ms, plus two failures.
    records = [ok(start=i * 0.5, ttft=0.1 * (i + 1), tokens=5, itl=0.02, prompt=20 + i) for i in range(10)]
    records += [failed(1.0, "http 503", "busy"), failed(2.0, "timeout"), failed(3.0, "http 503", "later")]
    level = summarise_level(Load("concurrency", 4), records, duration_s=10.0, slo=Slo())
    assert (level.requests, level.ok, level.failed) == (13, 10, 3)
    assert level.errors == {"http 503": 2, "timeout": 1}
    assert level.error_examples == {"http 503": "busy", "timeout": ""}
    assert level.request_throughput == pytest.approx(1.0)
    assert level.output_throughput == pytest.approx(5.0)  # 50 tokens over 10 s
    assert level.prompt_throughput == pytest.approx(24.5)  # 20 + ... + 29 = 245 over 10 s
    assert level.mean_output_tokens == pytest.approx(5.0)
    assert level.mean_prompt_tokens == pytest.approx(24.5)
    assert (
        level.ttft is not None and level.itl is not None and level.e2e is not None and level.gap is not None
    )
    assert level.ttft.p50 == pytest.approx(0.55)
    assert level.ttft.p90 == pytest.approx(0.91)
    assert level.ttft.p99 == pytest.approx(0.991)
    assert level.ttft.mean == pytest.approx(0.55)
    assert level.itl.p99 == pytest.approx(0.02)
    assert level.e2e.p50 == pytest.approx(0.55 + 0.08)
    assert level.gap.count == 40
    assert level.goodput is None and level.slo_attainment is None
    assert len(level.records) == 13
    assert level.records[10].error == "http 503"
    assert level.records[0].itl == pytest.approx(0.02)
    assert level.label == "4 users"


def test_goodput_counts_requests_meeting_every_slo() -> None:
    records = [ok(0.0, ttft=0.1 * (i + 1), tokens=5, itl=0.01 * (i + 1)) for i in range(10)]
    records.append(failed(0.0, "connect"))
    slo = Slo(ttft_s=0.55, itl_s=0.045)  # TTFT passes for i <= 4, ITL for i <= 3
    level = summarise_level(Load("rate", 2.0), records, duration_s=4.0, slo=slo)
    assert level.goodput == pytest.approx(4 / 4.0)
    assert level.slo_attainment == pytest.approx(4 / 11)
    assert level.label == "2 req/s"


def test_slo_rules() -> None:
    slow_start = ok(0.0, ttft=0.6, tokens=3, itl=0.01)
    assert not meets(slow_start, Slo(ttft_s=0.5))
    assert meets(slow_start, Slo(itl_s=0.02))
    assert meets(ok(0.0, ttft=0.1, tokens=1, itl=0.0), Slo(itl_s=0.001))  # one token: no ITL to miss
    assert not meets(ok(0.0, ttft=0.1, tokens=3, itl=0.5), Slo(e2e_s=0.9))
    assert not meets(failed(0.0, "timeout"), Slo(e2e_s=100))
    assert not meets(RequestRecord(start=0, e2e=0.1, output_tokens=0), Slo(ttft_s=1.0))  # no first token


def test_max_in_flight() -> None:
    records = [
        RequestRecord(start=0.0, e2e=1.0),
        RequestRecord(start=0.5, e2e=1.0),
        RequestRecord(start=1.0, e2e=0.2),  # starts as the first ends: 2, not 3
        RequestRecord(start=3.0, e2e=0.1),
    ]
    assert max_in_flight(records) == 2
    assert max_in_flight([]) == 0


def test_level_without_successes_or_time() -> None:
    level = summarise_level(
        Load("concurrency", 1), [failed(0.0, "connect")], duration_s=0.0, slo=Slo(ttft_s=1)
    )
    assert (level.ok, level.failed, level.output_throughput, level.goodput) == (0, 1, 0.0, 0.0)
    assert level.ttft is None and level.mean_output_tokens is None
    assert level.slo_attainment == 0.0
