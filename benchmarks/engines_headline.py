"""The headline: one model, three ways of serving it, at 1, 8 and 32 concurrent users.

SmolLM2-135M-Instruct served by (a) llama-server one request at a time (``--parallel 1``, what
Ollama does by default), (b) llama-server with parallel slots (continuous batching) and (c) vLLM's
CPU build (the same weights, dequantised from the GGUF to a Hugging Face folder; bf16 where the CPU
computes it natively, else float32); plus airlock's
gateway in front of (b) against (b) directly, which is the gateway's overhead. Every request asks
for the same number of tokens with ``ignore_eos``, so every answer is equally long; tokens are
counted from each server's own usage::

    .venv/bin/python benchmarks/engines_headline.py                      # 15-20 minutes on 2 cores
    .venv/bin/python benchmarks/engines_headline.py --duration 60 --setups llama-1,llama-n

All the setups' servers are started first (an idle one takes no CPU), then the levels run one
after another, every setup in turn at each level (``airlock.bench``, closed loop, each level
bounded by ``--duration``): on a shared machine a busy spell then falls on all the setups alike
rather than on whichever ran at the time, and the gateway's level runs right after the same
engine's direct one. Writes ``OUT/<setup>.json`` (full results), ``OUT/headline.json`` (the
summary), ``OUT/headline.md`` (the tables) and ``OUT/engines.html`` (all setups side by side, with
plots); prints the tables. vLLM needs the model as a Hugging Face folder; it is made once from the
GGUF by ``benchmarks/convert_smollm2_hf.py`` in vLLM's environment, which needs the ``gguf`` and
``accelerate`` packages there.

The machine's load average is recorded before each level: other work on a small machine shows in
the numbers, so a busy run should be repeated when the machine is idle.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from _procs import Proc
from airlock.bench import BenchOptions, BenchResults, Load, run_bench, save_results
from airlock.bench.html_report import write_report
from airlock.engines.base import OFFLINE_ENV, free_port
from airlock.engines.llamacpp import build_info, locate_llama_server
from airlock.engines.vllm import locate_vllm_python, vllm_version
from airlock.serving.default_model import locate_default_model
from airlock.settings import Settings
from airlock.spec import LlamaCppEngineSpec, VllmEngineSpec

MODEL = "smollm2-135m"
HERE = Path(__file__).resolve().parent
SETUPS = ("llama-1", "llama-n", "gateway", "vllm")


@dataclass(frozen=True)
class Setup:
    key: str
    title: str
    version: str = ""


@contextmanager
def server(
    argv: list[str], log: Path, url: str, timeout_s: float, env: dict[str, str] | None = None
) -> Iterator[None]:
    """Run a server in its own process group until the block ends; ready when ``url`` answers 200."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = Proc(log.stem, argv, log.parent, env)
    try:
        try:
            proc.wait_http(url, timeout_s)
        except (RuntimeError, TimeoutError) as e:
            raise SystemExit(str(e)) from None
        yield
    finally:
        proc.stop(30)


def llama_argv(binary: Path, gguf: Path, port: int, slots: int, threads: int) -> list[str]:
    return [
        str(binary), "-m", str(gguf), "--alias", MODEL, "--host", "127.0.0.1", "--port", str(port),
        "--parallel", str(slots), "-c", str(1024 * slots), "-t", str(threads), "--no-webui",
    ]  # fmt: skip


@contextmanager
def gateway(gw_url: str, engine_url: str, out: Path) -> Iterator[None]:
    """``airlock serve`` (no auth) in front of ``engine_url`` as a remote engine, state kept under ``out``."""
    spec = out / "gateway.yaml"
    port = gw_url.rsplit(":", 1)[1]
    spec.write_text(
        f"gateway: {{host: 127.0.0.1, port: {port}}}\n"
        f"models:\n  - name: {MODEL}\n    engine: {{kind: remote, url: '{engine_url}/v1', model: {MODEL}}}\n"
    )
    argv = [sys.executable, "-m", "airlock.cli.main", "serve", "--config", str(spec), "--no-auth"]
    env = {**os.environ, "AIRLOCK_HOME": str(out / "airlock-home")}
    with server(argv, out / "logs" / "gateway.log", gw_url + "/v1/models", 60, env=env):
        yield


def cpu_dtype() -> str:
    """bfloat16 where the CPU computes it natively (AVX512-BF16, AMX), else float32.

    On a CPU with AVX2 only, vLLM's oneDNN cannot build bf16 matmuls ("Failed to create oneDNN
    linear, fallback to torch linear") and the fallback is several times slower than float32.
    """
    flags = set()
    with Path("/proc/cpuinfo").open() as info:
        for line in info:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"


def vllm_model_dir(python: Path, gguf: Path, settings: Settings) -> Path:
    out = settings.cache / "models" / "SmolLM2-135M-Instruct-hf-bf16"
    if not (out / "config.json").is_file():
        print(f"converting {gguf.name} to a Hugging Face folder for vLLM (once) ...", file=sys.stderr)
        subprocess.run([str(python), str(HERE / "convert_smollm2_hf.py"), str(gguf), str(out)], check=True)
    return out


def bench(url: str, users: int, warmup: int, seed: int, args: argparse.Namespace) -> BenchResults:
    """One level against one setup; every run its own seed, so no engine's cache sees a prompt twice."""
    options = BenchOptions(
        seed=seed,
        url=url + "/v1",
        model=MODEL,
        loads=(Load("concurrency", users),),
        duration_s=args.duration,
        prompt_tokens=args.prompt_tokens,
        output_tokens=args.output_tokens,
        ignore_eos=True,
        warmup=warmup,
        extra_body={"temperature": 0},
    )
    return run_bench(options)


def merge(runs: list[BenchResults]) -> BenchResults:
    """One setup's single-level runs as one results file (settings of the first, end of the last)."""
    info = runs[0].info.model_copy(update={"finished_at": runs[-1].info.finished_at})
    warnings = list(dict.fromkeys(w for r in runs for w in r.warnings))
    return BenchResults(info=info, levels=[lv for r in runs for lv in r.levels], warnings=warnings)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_servers(args: argparse.Namespace, stack: ExitStack) -> list[tuple[Setup, str]]:
    """Start every setup's server (they idle between their turns); (setup, base URL) in run order."""
    settings = Settings.from_env()
    gguf = locate_default_model(settings)
    llama = locate_llama_server(LlamaCppEngineSpec(kind="llamacpp"), settings)
    logs = args.out / "logs"
    started: list[tuple[Setup, str]] = []
    for key, slots in (("llama-1", 1), ("llama-n", args.slots)):
        if key in args.setups or (key == "llama-n" and "gateway" in args.setups):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            argv = llama_argv(llama, gguf, port, slots, args.threads)
            stack.enter_context(server(argv, logs / f"{key}.log", url + "/health", 60))
            title = (
                "llama-server, 1 slot (one request at a time)"
                if slots == 1
                else f"llama-server, {slots} slots"
            )
            if key in args.setups:
                started.append((Setup(key, title, build_info(llama)), url))
    if "gateway" in args.setups:
        gw_url = f"http://127.0.0.1:{free_port()}"
        stack.enter_context(gateway(gw_url, url, args.out))
        started.append((Setup("gateway", f"airlock gateway -> llama-server, {args.slots} slots"), gw_url))
    if "vllm" in args.setups:
        python = locate_vllm_python(VllmEngineSpec(kind="vllm"), settings)
        model_dir = vllm_model_dir(python, gguf, settings)
        dtype = args.vllm_dtype or cpu_dtype()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [
            str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", "2048", "--dtype", dtype,
        ]  # fmt: skip
        env = {
            **os.environ,
            **OFFLINE_ENV,
            "VLLM_CPU_KVCACHE_SPACE": str(args.kv_cache_gib),
            # By default vLLM keeps one core for its HTTP front end: on 2 cores, half the machine.
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            "VLLM_CPU_OMP_THREADS_BIND": f"0-{(os.cpu_count() or 1) - 1}",
        }
        stack.enter_context(server(argv, logs / "vllm.log", url + "/health", 600, env=env))
        started.append((Setup("vllm", f"vLLM CPU ({dtype})", vllm_version(python)), url))
    return started


def run_all(
    args: argparse.Namespace,
) -> tuple[list[Setup], dict[str, BenchResults], dict[str, dict[int, str]]]:
    """Level by level, every setup in turn, so a busy spell on a shared machine hits all of them alike."""
    runs: dict[str, list[BenchResults]] = {}
    loads: dict[str, dict[int, str]] = {}
    with ExitStack() as stack:
        started = start_servers(args, stack)
        for users in args.levels:
            for setup, url in started:
                load = loads.setdefault(setup.key, {})[users] = _load()
                print(f"== {setup.title}, {users} users (load average {load})", file=sys.stderr)
                warmup = args.warmup if setup.key not in runs else 0
                seed = args.seed + 100 * len(loads[setup.key]) + [s.key for s, _ in started].index(setup.key)
                runs.setdefault(setup.key, []).append(bench(url, users, warmup, seed, args))
    results = {key: merge(parts) for key, parts in runs.items()}
    for key, merged in results.items():
        save_results(merged, args.out / f"{key}.json")
    return [setup for setup, _ in started], results, loads


def tables(setups: list[Setup], results: dict[str, BenchResults], levels: list[int]) -> str:
    engines = [s for s in setups if s.key != "gateway"]
    head = "| users | " + " | ".join(f"{s.title}: tok/s, p99 latency" for s in engines) + " |"
    lines = [head, "|---:|" + "---:|" * len(engines)]
    for n in levels:
        cells = []
        for s in engines:
            level = results[s.key].level("concurrency", n)
            if level is None or level.e2e is None:
                cells.append("–")
                continue
            failed = f", {level.failed} failed" if level.failed else ""
            cells.append(f"{level.output_throughput:,.0f} tok/s, {level.e2e.p99:.1f} s{failed}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    if "gateway" in results and "llama-n" in results:
        lines += [
            "",
            "| users | direct: tok/s | via gateway: tok/s | TTFT p50 direct / gateway | E2E p50 direct / gateway "
            "| failed direct / gateway |",
        ]
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for n in levels:
            d, g = results["llama-n"].level("concurrency", n), results["gateway"].level("concurrency", n)
            if d is None or g is None or not (d.ttft and g.ttft and d.e2e and g.e2e):
                continue
            lines.append(
                f"| {n} | {d.output_throughput:,.1f} | {g.output_throughput:,.1f} "
                f"({(g.output_throughput / d.output_throughput - 1):+.1%}) | "
                f"{d.ttft.p50 * 1000:,.1f} / {g.ttft.p50 * 1000:,.1f} ms | "
                f"{d.e2e.p50 * 1000:,.0f} / {g.e2e.p50 * 1000:,.0f} ms | {d.failed} / {g.failed} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,8,32", help="concurrent users per level")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds per level (answers in flight are awaited)"
    )
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=8, help="requests before each setup's first level")
    parser.add_argument("--slots", type=int, default=8, help="llama-server --parallel for setup (b)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="llama-server -t")
    parser.add_argument("--kv-cache-gib", type=int, default=2, help="VLLM_CPU_KVCACHE_SPACE")
    parser.add_argument(
        "--vllm-dtype", help="vLLM --dtype (default: bfloat16 if the CPU has it natively, else float32)"
    )
    parser.add_argument("--seed", type=int, default=1, help="prompts: run i of setup j uses seed + 100 i + j")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"which of {','.join(SETUPS)} to run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "engines-headline")
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]
    args.setups = args.setups.split(",")
    if unknown := set(args.setups) - set(SETUPS):
        parser.error(f"unknown setups: {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    setups, results, loads = run_all(args)
    table = tables(setups, results, args.levels)
    host = f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    settings = (
        f"prompt ~{args.prompt_tokens} tokens, {args.output_tokens} output tokens (ignore_eos), "
        f"{args.duration:g} s per level, warm-up {args.warmup} requests"
    )
    summary = {
        "started": started,
        "host": host,
        "settings": settings,
        "setups": [
            {"key": s.key, "title": s.title, "engine": s.version, "load_average_before_level": loads[s.key]}
            for s in setups
        ],
        "levels": {
            s.key: {
                str(lv.value): {
                    "output_tokens_per_s": lv.output_throughput,
                    "requests_per_s": lv.request_throughput,
                    "ttft_p50_s": lv.ttft.p50 if lv.ttft else None,
                    "e2e_p50_s": lv.e2e.p50 if lv.e2e else None,
                    "e2e_p99_s": lv.e2e.p99 if lv.e2e else None,
                    "ok": lv.ok,
                    "failed": lv.failed,
                }
                for lv in results[s.key].levels
            }
            for s in setups
        },
    }
    (args.out / "headline.json").write_text(json.dumps(summary, indent=2) + "\n")
    notes = "\n".join(
        f"- {s.title}: {s.version or 'airlock'}; load average (1, 5, 15 min) before each level: "
        + "; ".join(f"{n} users: {load}" for n, load in loads[s.key].items())
        for s in setups
    )
    (args.out / "headline.md").write_text(f"{table}\n\nMeasured {started} on {host}; {settings}.\n{notes}\n")
    write_report([(s.title, results[s.key]) for s in setups], args.out / "engines.html")
    print(table)
    print(f"\n{settings}\n{host}\n{notes}\nwrote {args.out}")


if __name__ == "__main__":
    main()
