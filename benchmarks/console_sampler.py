"""What one sample of the console's live-traffic ring costs, against the size of the gateway's metrics.

    .venv/bin/python benchmarks/console_sampler.py [--models 20 --keys 50]

The ring reads the request, latency, TTFT and completion-token families once a second while the live
view is watched (every 10 s otherwise), in a thread. Prints the median and worst of 20 samples, and
the same read of the whole registry for comparison (what a /metrics scrape builds).
"""

from __future__ import annotations

import argparse
import statistics
import time

from airlock.gateway.console.traffic import TrafficRing
from airlock.gateway.metrics import GatewayMetrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--keys", type=int, default=50)
    args = parser.parse_args()
    metrics = GatewayMetrics()
    for m in range(args.models):
        for k in range(args.keys):
            for status in (200, 429, 500):
                metrics.request_done("/v1/chat/completions", f"model{m}", status, f"key{k}", 0.05, True)
            metrics.tokens(f"model{m}", f"key{k}", {"prompt_tokens": 5, "completion_tokens": 9})
        metrics.first_token(f"model{m}", 0.02)
    ring = TrafficRing(metrics, dict)
    ring.sample()
    taken = []
    for _ in range(20):
        began = time.perf_counter()
        ring.sample()
        taken.append(time.perf_counter() - began)
    whole = []
    for _ in range(5):
        began = time.perf_counter()
        list(metrics.registry.collect())
        whole.append(time.perf_counter() - began)
    series = args.models * args.keys * 3
    print(f"{series} request series: a sample takes {statistics.median(taken) * 1000:.1f} ms "
          f"(worst {max(taken) * 1000:.1f} ms); the whole registry {statistics.median(whole) * 1000:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
