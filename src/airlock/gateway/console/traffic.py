"""Live traffic for the console: once a second the gateway reads its own metrics (GatewayMetrics)
and keeps a short ring of per-model points (requests/s, latency p50/p99, time to first token,
tokens/s, requests in flight); ``GET /console/api/traffic`` serves the ring as JSON.

Latency quantiles come from the histograms' bucket counts over the last ``window`` seconds,
interpolated within a bucket as Prometheus's ``histogram_quantile`` does. With ``--workers`` every
worker keeps its own ring from the metrics of all of them (prometheus multiprocess files).

**Cost.** A sample reads four series families; with 3,000 request series (20 models x 50 keys x 3
statuses) it took ~40 ms on a loaded 2-core machine, about what one ``/metrics`` scrape spends
collecting (``benchmarks/console_sampler.py``). So it runs in a thread, once a second while someone
watches the live view (a traffic read in the last five minutes) and once every ``idle_s`` otherwise;
each point is the average over its own interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from airlock.gateway.metrics import GatewayMetrics

#: the routes whose requests are model traffic (the others: /health, /metrics, the console...)
log = logging.getLogger("airlock.gateway.console")
MODEL_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


@dataclass
class _Totals:
    """One model's cumulative counts at one moment."""

    requests: float = 0.0
    errors: float = 0.0
    tokens: float = 0.0
    latency: dict[float, float] = field(default_factory=lambda: defaultdict(float))  # le -> cumulative
    ttft: dict[float, float] = field(default_factory=lambda: defaultdict(float))


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of cumulative histogram buckets (le -> count), or None without observations."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # beyond the last finite bound: that bound is all we know
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (le - lower) * share
        lower, below = le, count
    return lower


def _delta(now: dict[float, float], then: dict[float, float] | None) -> dict[float, float]:
    then = then or {}
    return {le: max(0.0, value - then.get(le, 0.0)) for le, value in now.items()}


def read_totals(families: Iterable[Metric]) -> dict[str, _Totals]:
    """Per model, the cumulative counts of the gateway's series (the ``-`` model left out)."""
    totals: dict[str, _Totals] = defaultdict(_Totals)
    for family in families:
        for s in family.samples:
            labels = s.labels
            model = labels.get("model")
            if model is None or model == "-":
                continue
            if s.name == "airlock_requests_total" and labels.get("route") in MODEL_ROUTES:
                totals[model].requests += s.value
                if not labels.get("status", "").startswith("2"):
                    totals[model].errors += s.value
            elif s.name == "airlock_request_duration_seconds_bucket" and labels.get("route") in MODEL_ROUTES:
                totals[model].latency[float(labels["le"])] += s.value
            elif s.name == "airlock_time_to_first_token_seconds_bucket":
                totals[model].ttft[float(labels["le"])] += s.value
            elif s.name == "airlock_completion_tokens_total":
                totals[model].tokens += s.value
    return dict(totals)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


class TrafficRing:
    """The last ``keep`` seconds of per-model points, one a second."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        in_flight: Callable[[], dict[str, int]],
        *,
        keep: int = 600,
        window: int = 10,
        interval_s: float = 1.0,
        idle_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.in_flight = in_flight
        self.interval_s = interval_s
        self.idle_s = idle_s
        self.watched_at = float("-inf")  # monotonic time of the last snapshot() (a console watching)
        self.window = window
        self.clock = clock
        self.points: deque[dict[str, Any]] = deque(maxlen=keep)
        self._history: deque[tuple[float, dict[str, _Totals]]] = deque(maxlen=window + 1)
        self._task: asyncio.Task[None] | None = None

    def _families(self) -> Iterable[Metric]:
        if self.metrics.multiprocess_dir is None:
            m = self.metrics
            return itertools.chain(m.requests.collect(), m.duration.collect(), m.ttft.collect(),
                                   m.completion_tokens.collect())  # fmt: skip
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, self.metrics.multiprocess_dir)  # type: ignore[no-untyped-call]
        return registry.collect()

    def sample(self, flying: dict[str, int] | None = None) -> dict[str, Any] | None:
        """Read the metrics now and append a point (the first call only sets the baseline).

        ``flying``: the requests in flight per engine, read on the event loop that owns the gates
        (``in_flight`` is called here when it is not given)."""
        now = self.clock()
        totals = read_totals(self._families())
        previous = self._history[-1] if self._history else None
        oldest = self._history[0] if self._history else None
        self._history.append((now, totals))
        if previous is None or oldest is None:
            return None
        elapsed = max(now - previous[0], 1e-6)
        if flying is None:
            flying = self.in_flight()
        models: dict[str, Any] = {}
        for name in sorted(set(totals) | set(flying)):
            cur = totals.get(name, _Totals())
            before = previous[1].get(name, _Totals())
            early = oldest[1].get(name)
            latency = _delta(cur.latency, early.latency if early else None)
            ttft = _delta(cur.ttft, early.ttft if early else None)
            models[name] = {
                "rps": _round((cur.requests - before.requests) / elapsed, 3),
                "errors": _round((cur.errors - before.errors) / elapsed, 3),
                "tokens_per_s": _round((cur.tokens - before.tokens) / elapsed, 2),
                "p50_s": _round(quantile(0.5, latency)),
                "p99_s": _round(quantile(0.99, latency)),
                "ttft_p50_s": _round(quantile(0.5, ttft)),
                "in_flight": flying.get(name, 0),
                "requests_total": int(cur.requests),
            }
        point = {"t": round(now, 3), "models": models}
        self.points.append(point)
        return point

    def snapshot(self, seconds: int) -> dict[str, Any]:
        self.watched_at = time.monotonic()
        points = list(self.points)[-seconds:] if seconds > 0 else []
        return {"interval_s": self.interval_s, "window_s": self.window, "points": points}

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:  # the gates are the loop's: read them here, not in the sampling thread
                await loop.run_in_executor(None, self.sample, self.in_flight())
            except Exception:  # one bad sample must not freeze the live view until a restart
                log.exception("the console's traffic sample failed; trying again")
            watched = time.monotonic() - self.watched_at < 300
            await asyncio.sleep(self.interval_s if watched else self.idle_s)
