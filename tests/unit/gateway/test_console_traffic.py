"""The console's live-traffic ring: per-second points read from the gateway's own metrics."""

from __future__ import annotations

import pytest

from airlock.gateway.console.traffic import TrafficRing, quantile
from airlock.gateway.metrics import GatewayMetrics


def test_quantiles_interpolate_within_a_bucket_as_prometheus_does() -> None:
    buckets = {0.1: 0.0, 0.2: 50.0, 0.5: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.2)
    assert quantile(0.25, buckets) == pytest.approx(0.15)
    assert quantile(0.99, buckets) == pytest.approx(0.2 + 0.3 * 49 / 50)
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.99, {1.0: 1.0, float("inf"): 10.0}) == 1.0, "past the last bound: that bound"


def test_each_point_is_the_difference_of_the_metrics_over_one_second() -> None:
    metrics = GatewayMetrics()
    now = [1000.0]
    flying = {"tiny": 2}
    ring = TrafficRing(metrics, lambda: flying, clock=lambda: now[0], window=10)
    assert ring.sample() is None, "the first read is the baseline"
    for _ in range(4):
        metrics.request_done("/v1/chat/completions", "tiny", 200, "alice", 0.03, True)
    metrics.request_done("/v1/chat/completions", "tiny", 429, "alice", 0.001, True)
    metrics.request_done("/v1/models", "-", 200, "alice", 0.001, False)
    metrics.first_token("tiny", 0.02)
    metrics.tokens("tiny", "alice", {"prompt_tokens": 7, "completion_tokens": 40})
    now[0] += 2.0
    point = ring.sample()
    assert point is not None
    tiny = point["models"]["tiny"]
    assert tiny["rps"] == 2.5 and tiny["errors"] == 0.5 and tiny["tokens_per_s"] == 20.0
    assert tiny["in_flight"] == 2 and tiny["requests_total"] == 5
    assert 0.025 < tiny["p50_s"] <= 0.05 and tiny["ttft_p50_s"] is not None
    assert set(point["models"]) == {"tiny"}, "requests that named no model are not a model's traffic"
    now[0] += 1.0
    quiet = ring.sample()
    assert quiet is not None and quiet["models"]["tiny"]["rps"] == 0.0
    assert quiet["models"]["tiny"]["p50_s"] is not None, "latency is over the window, not the last second"
    assert [p["t"] for p in ring.snapshot(300)["points"]] == [1002.0, 1003.0]


def test_a_sample_that_fails_does_not_stop_the_sampler() -> None:
    import asyncio

    calls = [0]

    def flying() -> dict[str, int]:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("a bad read")
        return {"tiny": 1}

    async def scenario() -> int:
        ring = TrafficRing(GatewayMetrics(), flying, interval_s=0.01, idle_s=0.01)
        await ring.start()
        for _ in range(500):  # a bound: each turn sleeps 10 ms
            if len(ring.points) >= 2:
                break
            await asyncio.sleep(0.01)
        await ring.stop()
        return len(ring.points)

    assert asyncio.run(scenario()) >= 2, "points kept coming after the failed one"
    assert calls[0] >= 4
