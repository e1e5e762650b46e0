"""``airlock bench`` against a real llama-server serving SmolLM2-135M (4 slots, 2 threads).

Token counts come from llama-server's own usage, prompts are sized with its own tokenizer, and its
habit of closing the connection after each stream must not show up as errors.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.bench import BenchOptions, Load, Slo, run_bench
from airlock.bench.html_report import render_html
from airlock.bench.results import LevelResult
from airlock.engines.base import free_port
from airlock.serving.default_model import locate_default_model
from airlock.settings import Settings
from harness import wait_healthy

pytestmark = pytest.mark.integration

OUTPUT_TOKENS = 32


@pytest.fixture(scope="module")
def llama_url(
    llama_server: Path, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("llama") / "llama-server.log").open("wb")
    argv = [
        str(llama_server), "-m", str(locate_default_model(settings)), "--host", "127.0.0.1", "--port", str(port),
        "--parallel", "4", "-c", "8192", "-t", "2", "--no-webui",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, what=f"llama-server (log: {log.name})", timeout_s=60, poll_s=0.2)
    yield url
    proc.terminate()
    proc.wait(30)
    log.close()


def test_closed_loop_on_llama_server(llama_url: str) -> None:
    options = BenchOptions(
        url=llama_url + "/v1",
        loads=(Load("concurrency", 1), Load("concurrency", 4)),
        requests=8,
        prompt_tokens=64,
        output_tokens=OUTPUT_TOKENS,
        ignore_eos=True,
        warmup=2,
        slo=Slo(ttft_s=30.0),
    )
    results = run_bench(options)
    info = results.info
    assert info.server == "llama.cpp"
    assert info.model.endswith(".gguf")  # llama-server names its model after the file
    assert info.calibration is not None
    assert info.calibration.intercept > 0  # the chat template's tokens
    assert 0.9 <= info.calibration.per_word <= 2.0
    one, four = results.levels
    for level in (one, four):
        assert (level.ok, level.failed) == (8, 0), level.errors  # closed connections are no errors
        assert all(r.output_tokens == OUTPUT_TOKENS for r in level.records)  # ignore_eos: exact lengths
        assert level.mean_prompt_tokens is not None
        assert abs(level.mean_prompt_tokens - 64) <= 0.15 * 64
        assert level.ttft is not None and level.itl is not None and level.e2e is not None
        assert 0 < level.ttft.p50 < level.e2e.p50
        assert level.itl.p50 > 0
        assert level.slo_attainment == 1.0
    assert four.max_in_flight == 4
    # Continuous batching over 4 slots, seen in the timeline rather than in a speed (which a busy CI
    # machine can blur): at 4 users the server streams several answers at once; at 1 user never.
    assert _overlapping_decodes(four) > 0
    assert _overlapping_decodes(one) == 0
    for level in (one, four):
        tokens = sum(r.output_tokens or 0 for r in level.records)
        assert level.output_throughput == pytest.approx(tokens / level.duration_s)
    assert render_html([("llama", results)]).count("<svg") == 3


def _overlapping_decodes(level: LevelResult) -> int:
    """Pairs of requests whose streams (first token to end) overlapped in time."""
    spans = sorted(
        (r.start + r.ttft, r.start + r.e2e) for r in level.records if r.ttft is not None and r.e2e is not None
    )
    return sum(1 for i, (_, end) in enumerate(spans) for begin, _ in spans[i + 1 :] if begin < end)


def test_open_loop_with_the_builtin_dataset(llama_url: str) -> None:
    options = BenchOptions(
        url=llama_url + "/v1", loads=(Load("rate", 2),), requests=6, dataset="builtin:chat", output_tokens=16
    )
    results = run_bench(options)
    (level,) = results.levels
    assert (level.ok, level.failed) == (6, 0), level.errors
    assert level.mean_output_tokens is not None and 1 <= level.mean_output_tokens <= 16
    assert "builtin:chat" in results.info.workload


def test_completions_endpoint(llama_url: str) -> None:
    options = BenchOptions(
        url=llama_url + "/v1", loads=(Load("concurrency", 2),), requests=4, endpoint="completions",
        prompt_tokens=32, output_tokens=8, ignore_eos=True,
    )  # fmt: skip
    results = run_bench(options)
    (level,) = results.levels
    assert (level.ok, level.failed) == (4, 0), level.errors
    assert level.mean_output_tokens == 8
