"""``airlock bench``: load tests and reports for any OpenAI-compatible endpoint.

    options (what to run) -> runner (resolve, probe, warm up, levels) -> loadgen (users or arrivals)
        -> client (one streamed, timed request) -> stats (percentiles, throughput, goodput)
        -> results (JSON) -> report (HTML with plots) / compare (runs side by side)

Example::

    from airlock.bench import BenchOptions, Load, run_bench, save_results
    results = run_bench(BenchOptions(url="http://127.0.0.1:8000/v1", loads=(Load("concurrency", 8),), requests=64))
    save_results(results, Path("run.json"))
"""

# The names below load on first use (PEP 562), so that `airlock bench --help` and a CLI module that
# needs only the options' types do not load the runner (aiohttp) through this package.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airlock.bench.options import BenchOptions, Load, Slo
    from airlock.bench.results import BenchResults, load_results, save_results
    from airlock.bench.runner import Observer, run_bench, run_bench_async

_HOME = {
    "BenchOptions": "options",
    "Load": "options",
    "Slo": "options",
    "BenchResults": "results",
    "load_results": "results",
    "save_results": "results",
    "Observer": "runner",
    "run_bench": "runner",
    "run_bench_async": "runner",
}
__all__ = [
    "BenchOptions",
    "BenchResults",
    "Load",
    "Observer",
    "Slo",
    "load_results",
    "run_bench",
    "run_bench_async",
    "save_results",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'airlock.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(f"airlock.bench.{_HOME[name]}"), name)
