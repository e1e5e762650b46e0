"""Prometheus metrics for the gateway, in a registry of its own (no global default registry).

Series (all prefixed ``airlock_``):

    requests_total{route,model,status,key}          counter
    request_duration_seconds{route,model}           histogram, to the last byte
    time_to_first_token_seconds{model}              histogram, streamed requests, to the first event
    prompt_tokens_total{model,key}                  counter, from the engine's usage
    completion_tokens_total{model,key}              counter, from the engine's usage
    requests_in_flight{route}                       gauge
    stream_send_timeouts_total{model}               counter, streams dropped: the client stopped reading
    engine_up{engine,kind}                          gauge, 1 when ready (read at scrape time)
    engine_restarts_total{engine,kind}              counter (read at scrape time)
    build_info{version}                             gauge, 1

``model`` is airlock's canonical name, or ``-`` when the request named no model it serves, so a
client cannot grow the series without bound by sending made-up names.

**Several worker processes** (``serve --workers``): when ``PROMETHEUS_MULTIPROC_DIR`` is set (the
parent sets it for its workers) prometheus_client keeps each value in a file of that directory
instead of in memory, and :meth:`GatewayMetrics.render` adds up every worker's files, so any worker
answers ``/metrics`` for all of them. ``requests_in_flight`` is summed over the living workers; the
engines' series and ``build_info`` come from the answering worker alone (each has the same view).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from airlock import __version__

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60)


class EngineCollector(Collector):
    """Reads engine state when Prometheus scrapes, so the request path pays nothing for it."""

    def __init__(self, snapshot: Callable[[], Iterable[tuple[str, str, bool, int]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("airlock_engine_up", "1 when the engine is ready", labels=["engine", "kind"])
        restarts = CounterMetricFamily(
            "airlock_engine_restarts", "Restarts of the engine by the supervisor", labels=["engine", "kind"]
        )
        for name, kind, ready, count in self._snapshot():
            up.add_metric([name, kind], 1.0 if ready else 0.0)
            restarts.add_metric([name, kind], float(count))
        yield up
        yield restarts


class BuildInfo(Collector):
    """``airlock_build_info{version}`` 1: a constant, so no worker keeps a file for it."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("airlock_build_info", "airlock's version", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info


class GatewayMetrics:
    def __init__(self, engines: Callable[[], Iterable[tuple[str, str, bool, int]]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self._own: list[Collector] = [BuildInfo()]  # read at scrape time, in the answering process
        if engines is not None:
            self._own.append(EngineCollector(engines))
        r = self.registry
        self.requests = Counter(
            "airlock_requests",
            "Requests by route, model, status and key",
            ["route", "model", "status", "key"],
            registry=r,
        )
        self.duration = Histogram(
            "airlock_request_duration_seconds", "Time to the last byte", ["route", "model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "airlock_time_to_first_token_seconds", "Time to the first streamed event", ["model"],
            buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter("airlock_prompt_tokens", "Prompt tokens", ["model", "key"], registry=r)
        self.completion_tokens = Counter(
            "airlock_completion_tokens", "Completion tokens", ["model", "key"], registry=r
        )
        self.send_timeouts = Counter(
            "airlock_stream_send_timeouts",
            "Streams dropped because their client read nothing for gateway.stream_send_timeout_s",
            ["model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "airlock_requests_in_flight", "Requests being served", ["route"], registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        if self.multiprocess_dir is None:
            for collector in self._own:
                r.register(collector)

        # labels() takes a lock and normalises its arguments on every call; the request path keeps
        # its own dict of children instead (bounded: routes x known models x statuses x keys).
        self._children: dict[tuple[str, ...], tuple[Any, Any]] = {}
        self._token_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._ttft_children: dict[str, Any] = {}
        self._gauges: dict[str, Any] = {}

    def render(self) -> bytes:
        """The Prometheus text of every series: this process's, or with several workers all of theirs."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        for collector in self._own:
            registry.register(collector)
        return generate_latest(registry)

    def request_done(
        self, route: str, model: str, status: int, key: str, elapsed_s: float, timed: bool
    ) -> None:
        """Count one finished request; ``timed`` adds it to the latency histogram."""
        ident = (route, model, str(status), key)
        children = self._children.get(ident)
        if children is None:
            children = (self.requests.labels(*ident), self.duration.labels(route, model))
            self._children[ident] = children
        children[0].inc()
        if timed:
            children[1].observe(elapsed_s)

    def first_token(self, model: str, seconds: float) -> None:
        """A streamed answer's time to its first event."""
        child = self._ttft_children.get(model)
        if child is None:
            child = self._ttft_children[model] = self.ttft.labels(model)
        child.observe(seconds)

    def in_flight_for(self, route: str) -> Any:
        gauge = self._gauges.get(route)
        if gauge is None:
            gauge = self._gauges[route] = self.in_flight.labels(route)
        return gauge

    def tokens(self, model: str, key: str, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        counters = self._token_children.get((model, key))
        if counters is None:
            counters = (self.prompt_tokens.labels(model, key), self.completion_tokens.labels(model, key))
            self._token_children[(model, key)] = counters
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and prompt >= 0:
            counters[0].inc(prompt)
        if isinstance(completion, int) and completion >= 0:
            counters[1].inc(completion)
