"""The soak's 60-second variant in the test command: ``benchmarks/soak.py --duration 60`` against
`airlock serve` with everything on (keys with limits, the hash-chained audit log, metrics) in front
of the fake engine.

It judges no speed. It checks what a leak would break: every request answered, the descriptor count
after the warm-up flat, resident memory grown by less than a generous bound per request (a leak of
one small object a request, ~0.5 KB, fails it; the 60-second run measured ~11 bytes a request,
still warming up), and every request in the audit log. The 10-minute soak is a bench script
(README, "Benchmarks").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PER_REQUEST_BOUND = 512  # bytes of RSS growth a request, over the fitted window


def test_a_60_second_soak_answers_everything_and_grows_neither_fds_nor_memory(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/soak.py"),
            "--duration",
            "60",
            "--every",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    html = (tmp_path / "soak.html").read_text()
    assert all(f'<g id="axes_{n}"' in html for n in (1, 2, 3, 4)), "RSS, fds, req/s and latency plotted"
    assert result["requests"] > 1000, result["requests"]
    assert result["errors"] == 0, result["error_examples"]
    assert result["streamed"] > 0
    growth = result["growth"]
    assert growth is not None
    assert growth["fds_last"] <= growth["fds_first"] + 2, growth
    assert max(s["fds"] for s in result["samples"]) < 200, [s["fds"] for s in result["samples"]]
    assert growth["rss_bytes_per_request"] < PER_REQUEST_BOUND, growth
    # one audit line a request, and the metrics scrapes beside them
    assert result["meta"]["audit lines"] >= result["requests"], result["meta"]
