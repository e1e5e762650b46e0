"""How much airlock's gateway costs per request, against the same fast mock backend, in one run.

Targets, all on loopback: the mock directly; a bare aiohttp pass-through proxy (no checks: the floor);
airlock with everything on (`airlock serve` with a remote engine pointing at the mock: a key scoped to
the chat route and the model, with rpm/tpm/tpd/concurrency limits set high enough never to refuse, so
every request is admitted and settled in the key database; the hash-chained audit log with the
prompt's and answer's SHA-256; validation, routing, Prometheus metrics), in one process and with
`--workers 2` ("airlock-2w"); and a LiteLLM proxy (with a master key) where it is installed.
Load: wrk (C, keep-alive), 1 and 32 concurrent connections, non-streamed and streamed chat requests;
then SSE events per second at 256 concurrent streams (the mock's 8 events and [DONE] per stream).

    python benchmarks/gateway_overhead.py [--duration 10] [--concurrency 1,32] [--sse-streams 256]
                                         [--litellm auto|off|install]

Prints a table and writes JSON (default benchmarks/results/gateway_overhead.json). Needs `wrk` (Debian).
Every process shares this machine's cores: read the numbers as relative, not absolute; the load
average (/proc/loadavg) is recorded beside each cell.
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
threads = {}
function setup(thread)
  table.insert(threads, thread)
end
%(events)s
done = function(summary, latency, requests)
  local e = summary.errors
  local ev = 0
  for _, t in ipairs(threads) do ev = ev + (t:get("events") or 0) end
  io.write(string.format('WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "mean_us": %%f, "errors": %%d, "events": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect + e.read + e.write + e.status + e.timeout, ev))
end
"""
# counts the SSE events of every answer (slower for wrk: only for the events-per-second cells)
COUNT_EVENTS = """
events = 0
function response(status, headers, body)
  local _, n = string.gsub(body, "data: ", "")
  events = events + n
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
    events_per_s: float = 0.0
    loadavg: str = ""
    cpu_us_per_req: float = 0.0  # the target's processes' CPU time (user + system) per request


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its children now (the workers of `serve --workers`).

    On a machine whose cores are shared, req/s and latency move with the neighbours' load; CPU time
    per request moves far less, so the table gives both."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{current}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def run_wrk(
    url: str,
    *,
    stream: bool,
    concurrency: int,
    duration: int,
    token: str | None,
    workdir: Path,
    events: bool = False,
) -> dict[str, float]:
    body = dict(BODY, stream=True) if stream else BODY
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    script = workdir / "req.lua"
    script.write_text(
        LUA % {"body": json.dumps(body), "auth": auth, "events": COUNT_EVENTS if events else ""}
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url + "/v1/chat/completions"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRKJSON "))
    return dict(json.loads(line[len("WRKJSON ") :]))


#: Limits set on the benchmark's key: every request is admitted and settled in the key database,
#: none is ever refused.
HIGH_LIMITS = ["--rpm", "1000000000", "--tpm", "1000000000000", "--tpd", "1000000000000", "--concurrency", "100000"]  # fmt: skip


def start_airlock(mock_url: str, workdir: Path, *, name: str, workers: int) -> tuple[Proc, str, str]:
    """`airlock serve` with everything on, and a key scoped to chat and the mock, with limits."""
    home = workdir / "airlock-home"
    env = {"AIRLOCK_HOME": str(home), "PYTHONPATH": str(ROOT / "src")}
    token = subprocess.run(
        [sys.executable, "-m", "airlock.cli.main", "keys", "create", f"bench-{name}", "-q",
         "--scope", "chat", "--models", "mock", *HIGH_LIMITS],
        env={**os.environ, **env}, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    spec = workdir / f"{name}.yaml"
    spec.write_text(
        f"gateway:\n  audit_log: {workdir / name}-audit.jsonl\n  audit_text: sha256\n"
        f"models:\n  - name: mock\n    engine: {{kind: remote, url: '{mock_url}/v1'}}\n"
    )
    port = free_port()
    proc = Proc(
        name,
        [sys.executable, "-m", "airlock.cli.main", "serve", "--config", str(spec), "--port", str(port),
         "--workers", str(workers)],
        workdir,
        env,
    )  # fmt: skip
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
    """The table: each target against the mock (added p50) and against the bare pass-through (req/s
    and p99 ratios)."""
    direct = {(c.stream, c.concurrency): c for c in cells if c.target == "direct"}
    bare = {(c.stream, c.concurrency): c for c in cells if c.target == "passthrough"}
    lines = [
        f"{'target':<13}{'mode':<8}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>10}"
        f"{'% bare':>8}{'p99/bare':>9}{'events/s':>10}{'CPU us/req':>11}{'cap. % bare':>12}{'errors':>7}  load"
    ]
    for c in cells:
        base, floor = direct.get((c.stream, c.concurrency)), bare.get((c.stream, c.concurrency))
        added = f"{c.p50_ms - base.p50_ms:.3f}" if base is not None and c.target != "direct" else ""
        share = (
            f"{100 * c.rps / floor.rps:.0f}%"
            if floor is not None and c.target not in ("direct", "passthrough")
            else ""
        )
        tail = (
            f"{c.p99_ms / floor.p99_ms:.2f}x"
            if floor is not None and c.target not in ("direct", "passthrough")
            else ""
        )
        mode = "stream" if c.stream else "plain"
        events = f"{c.events_per_s:.0f}" if c.events_per_s else ""
        # capacity: the req/s each would reach on the same CPU time, against the pass-through's
        capacity = (
            f"{100 * floor.cpu_us_per_req / c.cpu_us_per_req:.0f}%"
            if floor is not None and c.cpu_us_per_req and c.target not in ("direct", "passthrough")
            else ""
        )
        lines.append(
            f"{c.target:<13}{mode:<8}{c.concurrency:>8}{c.rps:>9.0f}{c.p50_ms:>9.3f}{c.p99_ms:>9.3f}{added:>10}"
            f"{share:>8}{tail:>9}{events:>10}{c.cpu_us_per_req:>11.0f}{capacity:>12}{c.errors:>7}  {c.loadavg}"
        )
    return "\n".join(lines)


def measure(
    name: str, url: str, key: str | None, *, stream: bool, concurrency: int, duration: int,
    workdir: Path, pid: int, events: bool = False,
) -> Cell:  # fmt: skip
    def wrk(seconds: int) -> dict[str, float]:
        return run_wrk(url, stream=stream, concurrency=concurrency, duration=seconds, token=key,
                       workdir=workdir, events=events)  # fmt: skip

    wrk(1)  # warm-up
    load = loadavg()
    cpu_before = cpu_seconds(pid)
    r = wrk(duration)
    cpu = cpu_seconds(pid) - cpu_before
    seconds = r["duration_us"] / 1e6
    cell = Cell(
        name, stream, concurrency, r["requests"] / seconds, r["p50_us"] / 1000, r["p99_us"] / 1000,
        int(r["errors"]), int(r["requests"]), r["events"] / seconds if events else 0.0, load,
        cpu * 1e6 / max(1, r["requests"]),
    )  # fmt: skip
    what = f"{cell.events_per_s:8.0f} events/s" if events else f"{cell.rps:8.0f} req/s"
    print(
        f"  {name:<12} stream={stream!s:<5} c={concurrency:<3} {what}  p50 {cell.p50_ms:.3f} ms"
        f"  p99 {cell.p99_ms:.3f} ms  (load {load})",
        file=sys.stderr,
    )
    return cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--sse-streams", type=int, default=256, help="concurrent streams (0: skip)")
    parser.add_argument(
        "--targets", default="", help="only these targets (comma-separated), e.g. passthrough,airlock"
    )
    parser.add_argument(
        "--litellm", choices=["auto", "off", "install"], default="auto", help="auto: use it if installed"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gateway_overhead.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    levels = [int(x) for x in args.concurrency.split(",")]
    wanted = set(filter(None, args.targets.split(",")))
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
            targets: list[tuple[str, str, str | None, int]] = [("direct", mock_url, None, mock.popen.pid)]
            pport = free_port()
            bare = Proc(
                "passthrough",
                [sys.executable, str(ROOT / "benchmarks/passthrough_proxy.py"), "--port", str(pport),
                 "--upstream", mock_url],
                workdir,
            )  # fmt: skip
            procs.append(bare)
            bare.wait_http(f"http://127.0.0.1:{pport}/health")
            targets.append(("passthrough", f"http://127.0.0.1:{pport}", None, bare.popen.pid))
            for name, workers in (("airlock", 1), ("airlock-2w", 2)):
                if wanted and name not in wanted:
                    continue
                airlock, aurl, token = start_airlock(mock_url, workdir, name=name, workers=workers)
                procs.append(airlock)
                targets.append((name, aurl, token, airlock.popen.pid))
            binary = litellm_binary(args.litellm)
            if binary is not None and (not wanted or "litellm" in wanted):
                litellm, lurl, lkey = start_litellm(binary, mock_url, workdir)
                procs.append(litellm)
                targets.append(("litellm", lurl, lkey, litellm.popen.pid))
            elif binary is None:
                print("LiteLLM not installed (run with --litellm install): skipped", file=sys.stderr)
            targets = [t for t in targets if not wanted or t[0] in wanted or t[0] == "direct"]
            cells: list[Cell] = []
            for stream in (False, True):
                for concurrency in levels:
                    for name, url, key, pid in targets:
                        cells.append(
                            measure(name, url, key, stream=stream, concurrency=concurrency,
                                    duration=args.duration, workdir=workdir, pid=pid)
                        )  # fmt: skip
            if args.sse_streams:
                for name, url, key, pid in targets:
                    if name in ("direct", "litellm"):
                        continue
                    cells.append(
                        measure(name, url, key, stream=True, concurrency=args.sse_streams,
                                duration=args.duration, workdir=workdir, pid=pid, events=True)
                    )  # fmt: skip
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
        "loadavg_after": loadavg(),
    }
    args.out.write_text(json.dumps({"meta": meta, "cells": [asdict(c) for c in cells]}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
