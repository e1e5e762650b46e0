"""A bounded soak of `airlock serve` on the fake engine: does the gateway's memory or descriptor count grow?

`airlock serve` with everything on (a key scoped to chat and metrics with rpm/tpm/tpd/concurrency
limits set high enough never to refuse, so every request is admitted and settled in the key database;
the hash-chained audit log; validation, routing, Prometheus metrics scraped every sample) in front of
airlock's fake engine (airlock.testing.fake_engine, its own process, on loopback). A fixed number of
clients in a closed loop send a steady mix of streamed and plain chat requests (alternating) for
``--duration`` seconds. Every ``--every`` seconds it records the gateway process's resident memory
(VmRSS) and open file descriptors (/proc/PID/fd), and the requests/s, p50 and p99 latency and errors
of the requests that finished in that interval.

The figure to watch is growth after the warm-up: a least-squares line through the samples of the last
80 % of the run, in KB/min for RSS and descriptors/min for fds.

    python benchmarks/soak.py --duration 600           # the 10-minute soak
    python benchmarks/soak.py --duration 60 --every 2  # the short variant

Writes JSON and a self-contained HTML page with the plots (default benchmarks/results/soak-<N>s.*).
Every process shares this machine's cores: requests/s and latency move with the neighbours' load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path

import aiohttp

from _procs import Proc, free_port

ROOT = Path(__file__).resolve().parent.parent
MODEL = "tiny"
#: every request is admitted and settled in the key database, none is ever refused
HIGH_LIMITS = ["--rpm", "1000000000", "--tpm", "1000000000000", "--tpd", "1000000000000", "--concurrency", "100000"]  # fmt: skip


@dataclass
class Sample:
    t_s: float  # seconds since the load started
    rss_kb: int
    fds: int
    requests: int  # finished in the interval (ok or not)
    errors: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    loadavg: str


@dataclass
class Growth:
    """Least-squares slopes over the samples from ``from_s`` on (after the warm-up)."""

    from_s: float
    rss_kb_per_min: float
    fds_per_min: float
    rss_first_kb: int  # at from_s
    rss_last_kb: int
    fds_first: int
    fds_last: int
    requests: int  # finished in the fitted window
    rss_bytes_per_request: float  # the RSS slope spread over those requests: a leak shows here


@dataclass
class Soak:
    duration_s: float
    concurrency: int
    token_delay_s: float
    max_tokens: int
    requests: int = 0
    streamed: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    growth: Growth | None = None
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    meta: dict[str, object] = field(default_factory=dict)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, round(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def start_stack(workdir: Path, token_delay: float) -> tuple[list[Proc], str, str, int]:
    """The fake engine, then `airlock serve` in front of it with keys, limits, audit and metrics on."""
    engine_port = free_port()
    engine = Proc(
        "engine",
        [sys.executable, "-m", "airlock.testing.fake_engine", "--port", str(engine_port), "--model", MODEL,
         "--token-delay", str(token_delay)],
        workdir,
    )  # fmt: skip
    engine_url = f"http://127.0.0.1:{engine_port}"
    engine.wait_http(engine_url + "/health")
    home = workdir / "airlock-home"
    env = {"AIRLOCK_HOME": str(home), "PYTHONPATH": str(ROOT / "src")}
    token = subprocess.run(
        [sys.executable, "-m", "airlock.cli.main", "keys", "create", "soak", "-q",
         "--scope", "chat,metrics", "--models", MODEL, *HIGH_LIMITS],
        env={**os.environ, **env}, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    spec = workdir / "soak.yaml"
    spec.write_text(
        f"gateway:\n  audit_log: {workdir / 'audit.jsonl'}\n  audit_text: sha256\n"
        f"models:\n  - name: {MODEL}\n    engine: {{kind: remote, url: '{engine_url}/v1'}}\n"
    )
    port = free_port()
    gateway = Proc(
        "gateway",
        [sys.executable, "-m", "airlock.cli.main", "serve", "--config", str(spec), "--port", str(port)],
        workdir,
        env,
    )
    url = f"http://127.0.0.1:{port}"
    gateway.wait_http(url + "/ready")
    return [engine, gateway], url, token, gateway.popen.pid


async def one_request(session: aiohttp.ClientSession, url: str, stream: bool, max_tokens: int) -> None:
    """One chat request, read to the end; raises if the answer is not a complete one."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        if not stream:
            answer = await resp.json()
            if not answer.get("choices"):
                raise RuntimeError(f"no choices: {str(answer)[:200]}")
            return
        done = False
        chunks = 0
        async for line in resp.content:
            if line.startswith(b"data: "):
                if line.strip() == b"data: [DONE]":
                    done = True
                else:
                    chunks += 1
        if not done or chunks < max_tokens:
            raise RuntimeError(f"stream ended after {chunks} chunks, [DONE] {'seen' if done else 'missing'}")


async def soak(args: argparse.Namespace, url: str, token: str, pid: int) -> Soak:
    result = Soak(args.duration, args.concurrency, args.token_delay, args.max_tokens)
    finished: list[tuple[float, bool]] = []  # (latency s, ok) since the last sample
    all_latencies: list[float] = []  # ms, every successful request, for the overall percentiles
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=args.concurrency + 4)
    timeout = aiohttp.ClientTimeout(total=60)
    start = time.monotonic()
    deadline = start + args.duration

    async def user(index: int, session: aiohttp.ClientSession) -> None:
        n = index
        while time.monotonic() < deadline:
            stream = n % 2 == 0  # half streamed, half plain, interleaved across users
            n += 1
            began = time.monotonic()
            ok = True
            try:
                await one_request(session, url, stream, args.max_tokens)
            except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                ok = False
                if len(result.error_examples) < 5:
                    result.error_examples.append(f"{type(exc).__name__}: {exc}")
            latency = time.monotonic() - began
            finished.append((latency, ok))
            if ok:
                all_latencies.append(latency * 1000)
            result.requests += 1
            result.streamed += stream
            result.errors += not ok

    async def sampler(session: aiohttp.ClientSession) -> None:
        last = start
        while True:
            await asyncio.sleep(max(0.0, last + args.every - time.monotonic()))
            now = time.monotonic()
            # the metrics route is part of "everything on": scraped as a monitor would
            async with session.get(url + "/metrics") as resp:
                await resp.read()
            batch, finished[:] = list(finished), []
            latencies = sorted(lat * 1000 for lat, ok in batch if ok)
            sample = Sample(
                t_s=round(now - start, 2), rss_kb=rss_kb(pid), fds=open_fds(pid), requests=len(batch),
                errors=sum(not ok for _, ok in batch), rps=len(batch) / (now - last),
                p50_ms=percentile(latencies, 50) if latencies else None,
                p99_ms=percentile(latencies, 99) if latencies else None, loadavg=loadavg(),
            )  # fmt: skip
            result.samples.append(sample)
            print(
                f"  t={sample.t_s:6.0f}s  rss {sample.rss_kb / 1024:7.1f} MiB  fds {sample.fds:4d}  "
                f"{sample.rps:6.0f} req/s  p50 {sample.p50_ms or 0:6.1f} ms  p99 {sample.p99_ms or 0:6.1f} ms"
                f"  errors {sample.errors}  load {sample.loadavg}",
                file=sys.stderr,
            )
            last = now
            if now >= deadline:
                return

    async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as session:
        watch = asyncio.create_task(sampler(session))
        users = [asyncio.create_task(user(i, session)) for i in range(args.concurrency)]
        await asyncio.gather(*users)
        await watch
    elapsed = time.monotonic() - start
    result.rps = result.requests / elapsed
    all_latencies.sort()
    if all_latencies:
        result.p50_ms = percentile(all_latencies, 50)
        result.p99_ms = percentile(all_latencies, 99)
    result.growth = growth(result.samples, warmup_share=args.warmup_share)
    return result


def growth(samples: list[Sample], warmup_share: float) -> Growth | None:
    """Slopes of RSS and fds over time after the warm-up (the first ``warmup_share`` of the run)."""
    if len(samples) < 3:
        return None
    cutoff = samples[-1].t_s * warmup_share
    kept = [s for s in samples if s.t_s >= cutoff]
    if len(kept) < 3:
        kept = samples[-3:]
    minutes = [s.t_s / 60 for s in kept]
    rss = statistics.linear_regression(minutes, [float(s.rss_kb) for s in kept]).slope
    fds = statistics.linear_regression(minutes, [float(s.fds) for s in kept]).slope
    requests = sum(s.requests for s in kept[1:])
    span_min = minutes[-1] - minutes[0]
    per_request = rss * span_min * 1024 / requests if requests else 0.0
    return Growth(
        kept[0].t_s,
        rss,
        fds,
        kept[0].rss_kb,
        kept[-1].rss_kb,
        kept[0].fds,
        kept[-1].fds,
        requests,
        per_request,
    )


def plots_svg(result: Soak) -> str:
    from airlock.bench.plots import _new, _svg  # matplotlib's object API, as bench's report draws

    fig, (mem, fds, rps, lat) = _new(14, 3.4, 4)
    minutes = [s.t_s / 60 for s in result.samples]
    mem.plot(minutes, [s.rss_kb / 1024 for s in result.samples], marker=".")
    mem.set_title("Gateway resident memory (MiB)")
    fds.plot(minutes, [s.fds for s in result.samples], marker=".", color="C1")
    fds.set_title("Gateway open file descriptors")
    rps.plot(minutes, [s.rps for s in result.samples], marker=".", color="C2")
    rps.set_title("Requests/s (per interval)")
    for pct, style in (("p50", "-"), ("p99", ":")):
        points = [(m, getattr(s, f"{pct}_ms")) for m, s in zip(minutes, result.samples, strict=True)]
        points = [(m, v) for m, v in points if v is not None]
        lat.plot([p[0] for p in points], [p[1] for p in points], linestyle=style, marker=".", label=pct)
    lat.set_title("Latency (ms, per interval)")
    lat.legend(fontsize=8)
    g = result.growth
    if g is not None:
        for ax in (mem, fds):
            ax.axvline(g.from_s / 60, color="0.5", linestyle="--", linewidth=0.8)
    for ax in (mem, fds, rps, lat):
        ax.set_xlabel("minutes")
        ax.set_ylim(bottom=0)
    return _svg(fig)


def render_html(result: Soak) -> str:
    from airlock.bench.html_report import _CSS

    g = result.growth
    rows = [
        ("run", f"{result.duration_s:g} s, {result.concurrency} clients in a closed loop, streamed and plain alternating"),
        ("engine", f"airlock's fake engine, {result.max_tokens} tokens per answer, {result.token_delay_s:g} s per token"),
        ("gateway", "airlock serve: keys with limits, audit log (sha256), metrics scraped every sample"),
        ("requests", f"{result.requests:,} ({result.streamed:,} streamed), {result.errors:,} failed"),
        ("overall", f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms"),
    ]  # fmt: skip
    if g is not None:
        rows += [
            ("RSS growth after warm-up", f"{g.rss_kb_per_min:+.1f} KB/min (fit from {g.from_s:.0f} s: "
             f"{g.rss_first_kb / 1024:.1f} → {g.rss_last_kb / 1024:.1f} MiB), "
             f"{g.rss_bytes_per_request:+.2f} bytes per request over {g.requests:,} requests"),
            ("fd growth after warm-up", f"{g.fds_per_min:+.2f} /min ({g.fds_first} → {g.fds_last})"),
        ]  # fmt: skip
    rows += [(k, str(v)) for k, v in result.meta.items()]
    table = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    errors = "".join(f'<div class="warn">{escape(e)}</div>' for e in result.error_examples)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>airlock soak</title>'
        f"<style>{_CSS}</style></head><body><h1>airlock soak: {result.duration_s:g} s</h1>"
        f'<table class="meta">{table}</table>{errors}<h2>Over time</h2>'
        '<p class="muted">The dashed line marks the end of the warm-up; growth is the least-squares slope after it.</p>'
        f"<figure>{plots_svg(result)}</figure></body></html>\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--concurrency", type=int, default=32, help="clients, each one request at a time")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument(
        "--token-delay", type=float, default=0.005, help="the fake engine's seconds per token"
    )
    parser.add_argument(
        "--warmup-share", type=float, default=0.2, help="share of the run left out of the fit"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path (the HTML goes beside it)")
    args = parser.parse_args()
    if not 0 < args.duration <= 24 * 3600:
        sys.exit("--duration: give 1 to 86400 seconds")
    out: Path = args.out or ROOT / f"benchmarks/results/soak-{args.duration:g}s.json"
    with tempfile.TemporaryDirectory(prefix="airlock-soak-") as tmp:
        procs, url, token, pid = start_stack(Path(tmp), args.token_delay)
        try:
            result = asyncio.run(soak(args, url, token, pid))
            load = loadavg()
        finally:
            for proc in reversed(procs):
                proc.stop()
        # once the gateway has stopped (its writer flushed): the log and its rotated files
        # (audit.jsonl.<first seq>), not its .head
        audit_files = [
            f for f in Path(tmp).glob("audit.jsonl*") if f.name == "audit.jsonl" or f.suffix[1:].isdigit()
        ]
        result.meta = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "audit lines": sum(sum(1 for _ in f.open("rb")) for f in audit_files),
            "audit files": len(audit_files),
            "loadavg after": load,
        }
    g = result.growth
    print(
        f"{result.requests:,} requests ({result.streamed:,} streamed, {result.errors} failed) in "
        f"{result.duration_s:g} s: {result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms"
    )
    if g is not None:
        print(
            f"after warm-up ({g.from_s:.0f} s on): RSS {g.rss_kb_per_min:+.1f} KB/min "
            f"({g.rss_first_kb / 1024:.1f} -> {g.rss_last_kb / 1024:.1f} MiB; "
            f"{g.rss_bytes_per_request:+.2f} bytes per request), fds {g.fds_per_min:+.2f}/min "
            f"({g.fds_first} -> {g.fds_last})"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(result), indent=2))
    html = out.with_suffix(".html")
    html.write_text(render_html(result))
    print(f"wrote {out} and {html}", file=sys.stderr)


if __name__ == "__main__":
    main()
