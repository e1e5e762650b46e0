"""How much airlock's gateway costs per request, against the same fast mock backend, in one run.

Targets, all on loopback: the mock directly; a bare aiohttp pass-through proxy (no checks: the floor);
airlock (`airlock serve` with a remote engine pointing at the mock: API key auth, validation, routing,
Prometheus metrics all on); and a LiteLLM proxy (with a master key) where it is installed.
Load: wrk (C, keep-alive), 1 and 32 concurrent connections, non-streamed and streamed chat requests.

    python benchmarks/gateway_overhead.py [--duration 10] [--concurrency 1,32] [--litellm auto|off|install]

Prints a table and writes JSON (default benchmarks/results/gateway_overhead.json). Needs `wrk` (Debian).
Every process shares this machine's cores: read the numbers as relative, not absolute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from _procs import Proc, free_port

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("AIRLOCK_CACHE", Path.home() / ".cache/airlock"))
LITELLM_VENV = CACHE / "bench" / "litellm-1.108.7"
BODY = {
    "model": "mock",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 16,
}

LUA = """
wrk.method = "POST"
wrk.body = [[%(body)s]]
wrk.headers["Content-Type"] = "application/json"
%(auth)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "mean_us": %%f, "errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass
class Cell:
    target: str
    stream: bool
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


def run_wrk(
    url: str, *, stream: bool, concurrency: int, duration: int, token: str | None, workdir: Path
) -> dict[str, float]:
    body = dict(BODY, stream=True) if stream else BODY
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    script = workdir / "req.lua"
    script.write_text(LUA % {"body": json.dumps(body), "auth": auth})
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url + "/v1/chat/completions"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRKJSON "))
    return dict(json.loads(line[len("WRKJSON ") :]))


def start_airlock(mock_url: str, workdir: Path) -> tuple[Proc, str, str]:
    home = workdir / "airlock-home"
    env = {"AIRLOCK_HOME": str(home), "PYTHONPATH": str(ROOT / "src")}
    token = subprocess.run(
        [sys.executable, "-m", "airlock.cli.main", "keys", "create", "bench", "-q"],
        env={**os.environ, **env}, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    spec = workdir / "airlock.yaml"
    spec.write_text(f"models:\n  - name: mock\n    engine: {{kind: remote, url: '{mock_url}/v1'}}\n")
    port = free_port()
    proc = Proc(
        "airlock",
        [sys.executable, "-m", "airlock.cli.main", "serve", "--config", str(spec), "--port", str(port)],
        workdir,
        env,
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/ready")
    return proc, url, token


def litellm_binary(mode: str) -> Path | None:
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists() or mode == "off":
        return binary if binary.exists() and mode != "off" else None
    if mode == "install":
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [str(LITELLM_VENV / "bin/pip"), "install", "--quiet", "litellm[proxy]==1.108.7"], check=True
        )
        return binary
    return None


def start_litellm(binary: Path, mock_url: str, workdir: Path) -> tuple[Proc, str, str]:
    key = "sk-bench-master-key"
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: mock\n    litellm_params:\n"
        f"      model: openai/mock\n      api_base: {mock_url}/v1\n      api_key: unused\n"
        f"general_settings:\n  master_key: {key}\n"
        "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
    )
    port = free_port()
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"}
    proc = Proc(
        "litellm",
        [
            str(binary),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        workdir,
        env,
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/health/liveliness", timeout=180)
    return proc, url, key


def render(cells: list[Cell]) -> str:
    direct = {(c.stream, c.concurrency): c for c in cells if c.target == "direct"}
    lines = [
        f"{'target':<13}{'mode':<8}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'added p50 ms':>14}{'errors':>8}"
    ]
    for c in cells:
        base = direct[(c.stream, c.concurrency)]
        added = "" if c.target == "direct" else f"{c.p50_ms - base.p50_ms:.3f}"
        mode = "stream" if c.stream else "plain"
        lines.append(
            f"{c.target:<13}{mode:<8}{c.concurrency:>8}{c.rps:>10.0f}{c.p50_ms:>9.3f}{c.p99_ms:>9.3f}{added:>14}{c.errors:>8}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument(
        "--litellm", choices=["auto", "off", "install"], default="auto", help="auto: use it if installed"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gateway_overhead.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    levels = [int(x) for x in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        workdir = Path(tmp)
        procs: list[Proc] = []
        try:
            port = free_port()
            mock = Proc(
                "mock",
                [sys.executable, str(ROOT / "benchmarks/mock_openai.py"), "--port", str(port)],
                workdir,
            )
            procs.append(mock)
            mock_url = f"http://127.0.0.1:{port}"
            mock.wait_http(mock_url + "/health")
            targets: list[tuple[str, str, str | None]] = [("direct", mock_url, None)]
            pport = free_port()
            bare = Proc(
                "passthrough",
                [
                    sys.executable,
                    str(ROOT / "benchmarks/passthrough_proxy.py"),
                    "--port",
                    str(pport),
                    "--upstream",
                    mock_url,
                ],
                workdir,
            )
            procs.append(bare)
            bare.wait_http(f"http://127.0.0.1:{pport}/health")
            targets.append(("passthrough", f"http://127.0.0.1:{pport}", None))
            airlock, aurl, token = start_airlock(mock_url, workdir)
            procs.append(airlock)
            targets.append(("airlock", aurl, token))
            binary = litellm_binary(args.litellm)
            if binary is not None:
                litellm, lurl, lkey = start_litellm(binary, mock_url, workdir)
                procs.append(litellm)
                targets.append(("litellm", lurl, lkey))
            else:
                print("LiteLLM not installed (run with --litellm install): skipped", file=sys.stderr)
            cells: list[Cell] = []
            for stream in (False, True):
                for concurrency in levels:
                    for name, url, key in targets:
                        run_wrk(
                            url,
                            stream=stream,
                            concurrency=concurrency,
                            duration=1,
                            token=key,
                            workdir=workdir,
                        )  # warm-up
                        r = run_wrk(
                            url,
                            stream=stream,
                            concurrency=concurrency,
                            duration=args.duration,
                            token=key,
                            workdir=workdir,
                        )
                        cell = Cell(
                            name,
                            stream,
                            concurrency,
                            r["requests"] / (r["duration_us"] / 1e6),
                            r["p50_us"] / 1000,
                            r["p99_us"] / 1000,
                            int(r["errors"]),
                            int(r["requests"]),
                        )
                        cells.append(cell)
                        print(
                            f"  {name:<12} stream={stream!s:<5} c={concurrency:<3} {cell.rps:8.0f} req/s  p50 {cell.p50_ms:.3f} ms",
                            file=sys.stderr,
                        )
        finally:
            for proc in reversed(procs):
                proc.stop()
    print(render(cells))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "duration_s": args.duration,
    }
    args.out.write_text(json.dumps({"meta": meta, "cells": [asdict(c) for c in cells]}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
