"""Whole runs against the fake engine with fixed timings (TTFT 100 ms, then a token every 20 ms).

The engine runs in-process, on the bench's virtual-time loop, so token counts, prompt sizing,
request counts and timings are all exact whatever the machine's load. Through the gateway, the
engine is a real child process on real time: there only order and counts are checked.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from aiohttp import web

from airlock.bench import BenchOptions, Load, Observer, Slo, run_bench, run_bench_async
from airlock.bench.client import RequestRecord
from airlock.bench.results import BenchResults, LevelResult
from airlock.bench.runner import BenchInterrupted
from airlock.errors import EndpointError
from airlock.gateway.apikeys import KeyStore
from airlock.gateway.auth import KeyCache
from airlock.testing.virtual_time import run_virtual
from harness import GatewayThread, fake_engine_config

from .conftest import IN_PROCESS_URL, TOKEN_DELAY_S, TTFT_S, fake_engine_app, serve_unix

TOKENS = 8
#: The least time a request can take: TTFT, then TOKENS - 1 gaps.
MIN_REQUEST_S = TTFT_S + (TOKENS - 1) * TOKEN_DELAY_S


def options(url: str, **kw: object) -> BenchOptions:
    base: dict[str, object] = {
        "url": url + "/v1",
        "loads": (Load("concurrency", 1), Load("concurrency", 4)),
        "requests": 12,
        "prompt_tokens": 40,
        "output_tokens": TOKENS,
    }
    return BenchOptions(**{**base, **kw})  # type: ignore[arg-type]


async def bench_async(
    options: BenchOptions, observer: Observer | None = None, app: web.Application | None = None
) -> BenchResults:
    """The run against ``app`` (the standard fake engine) served on the running loop."""
    async with serve_unix(app or fake_engine_app()) as connector:
        clock = asyncio.get_running_loop().time
        return await run_bench_async(options, observer, clock=clock, connector=connector)


def bench(options: BenchOptions, app: web.Application | None = None) -> BenchResults:
    """A whole run against the in-process fake engine, on virtual time."""
    return run_virtual(bench_async(options, app=app))


def check_timings(level: LevelResult, users: int) -> None:
    assert level.ttft is not None and level.itl is not None and level.e2e is not None
    assert TTFT_S <= level.ttft.p50 < TTFT_S + 0.06, level.ttft
    assert TOKEN_DELAY_S * 0.75 <= level.itl.p50 < TOKEN_DELAY_S * 1.5, level.itl
    assert level.e2e.min >= MIN_REQUEST_S
    ceiling = users * TOKENS / MIN_REQUEST_S  # no request can be faster than MIN_REQUEST_S
    assert 0.5 * ceiling <= level.output_throughput <= ceiling, (level.output_throughput, ceiling)
    # Virtual time: each stream is exactly TTFT, then a token every TOKEN_DELAY_S (and one more
    # delay after the last token before the engine ends the stream).
    assert level.ttft.p50 == pytest.approx(TTFT_S)
    assert level.itl.p50 == pytest.approx(TOKEN_DELAY_S)
    assert level.e2e.min == pytest.approx(MIN_REQUEST_S + TOKEN_DELAY_S)


def check_order(level: LevelResult, users: int, records: list[RequestRecord]) -> None:
    """Timings through a real process on real time: only order and counts, never durations."""
    assert level.max_in_flight == users
    assert len(records) == level.requests
    for record in records:
        assert record.ttft is not None and record.e2e is not None
        assert len(record.chunk_times) == TOKENS  # every token reached the client as its own chunk
        assert record.ttft == record.chunk_times[0] > 0
        assert all(a < b for a, b in itertools.pairwise(record.chunk_times))
        assert record.e2e >= record.chunk_times[-1]


class _Records(Observer):
    """Keeps every request's record (with its chunk times, which the results leave out), by level."""

    def __init__(self) -> None:
        self.by_level: dict[int, list[RequestRecord]] = {}

    def request_done(self, index: int, record: RequestRecord) -> None:
        self.by_level.setdefault(index, []).append(record)


def test_closed_loop_run() -> None:
    results = bench(options(IN_PROCESS_URL, slo=Slo(ttft_s=1.0)))
    assert results.info.model == "fake"  # the endpoint's only model
    assert results.info.calibration is not None
    # The fake engine counts words: the probes find 0 tokens of template and 1 token per word.
    assert results.info.calibration.intercept == pytest.approx(0)
    assert results.info.calibration.per_word == pytest.approx(1)
    assert results.info.calibration.words == 40
    assert [lv.label for lv in results.levels] == ["1 user", "4 users"]
    for level, users in zip(results.levels, (1, 4), strict=True):
        assert (level.requests, level.ok, level.failed) == (12, 12, 0)
        assert level.mean_prompt_tokens == 40 and level.mean_output_tokens == TOKENS
        assert all(r.output_tokens == TOKENS for r in level.records)
        assert level.missing_usage == 0
        assert level.max_in_flight == users
        assert level.slo_attainment == 1.0
        check_timings(level, users)
    assert results.warnings == []


def test_open_loop_run() -> None:
    results = bench(options(IN_PROCESS_URL, loads=(Load("rate", 20),), requests=10, arrival="constant"))
    (level,) = results.levels
    assert level.ok == 10 and level.label == "20 req/s"
    # Arrivals every 50 ms and answers after >= 240 ms: several are always open at once.
    assert level.max_in_flight >= 4
    starts = sorted(r.start for r in level.records)
    assert starts[-1] == pytest.approx(0.45, abs=0.05)
    assert starts == pytest.approx([0.05 * i for i in range(10)])  # virtual time: on schedule exactly
    assert results.info.arrival == "constant"


def test_errors_are_counted_by_kind(tmp_path: Path) -> None:
    dataset = tmp_path / "mixed.jsonl"
    dataset.write_text('{"prompt": "hello"}\n{"prompt": "please fail 500"}\n{"prompt": "please fail 400"}\n')
    results = bench(
        options(IN_PROCESS_URL, loads=(Load("concurrency", 3),), requests=9, dataset=str(dataset))
    )
    (level,) = results.levels
    assert (level.ok, level.failed) == (3, 6)  # each line three times
    assert level.errors == {"http 400": 3, "http 500": 3}
    assert level.error_examples["http 500"] == "engine exploded"
    assert results.info.calibration is None and "mixed.jsonl" in results.info.workload


def test_warmup_requests_are_not_counted() -> None:
    results = bench(options(IN_PROCESS_URL, loads=(Load("concurrency", 2),), requests=4, warmup=3))
    assert results.levels[0].requests == 4 and results.info.warmup == 3


def test_wrong_model_and_dead_endpoint_fail_before_any_load() -> None:
    with pytest.raises(EndpointError, match="model 'nope' not found") as info:
        bench(options(IN_PROCESS_URL, model="nope"))
    assert info.value.hint is not None and "--model" in info.value.hint
    with pytest.raises(EndpointError, match="cannot reach"):
        run_bench(options("http://127.0.0.1:9"))


def test_api_key_is_sent() -> None:
    def locked() -> web.Application:
        return fake_engine_app(model="locked", api_key="sesame")

    with pytest.raises(EndpointError, match="HTTP 401") as info:
        bench(options(IN_PROCESS_URL, requests=1), app=locked())
    assert info.value.hint is not None and "AIRLOCK_API_KEY" in info.value.hint
    sent = options(IN_PROCESS_URL, requests=2, api_key="sesame", loads=(Load("concurrency", 1),))
    results = bench(sent, app=locked())
    assert results.levels[0].ok == 2
    assert "sesame" not in results.model_dump_json()


def test_through_the_gateway(tmp_path: Path) -> None:
    """The gateway passes usage through and keeps the timings; its own API key is what it checks.

    Its model list names ``tiny`` and the alias ``default`` (as the README's default server does):
    one model, which bench picks without --model.
    """
    store = KeyStore(tmp_path / "keys.db")
    token = store.create("bench")[1]
    # Real time here, and no durations asserted: short delays keep it quick, still one token per chunk.
    config = fake_engine_config("tiny", token_delay=0.002, argv_extra=("--ttft", "0.01"))
    with GatewayThread(
        [config], tmp_path / "logs", keys=KeyCache(store), aliases={"tiny": ["default"]}
    ) as gw:
        seen = _Records()
        results = run_bench(options(gw.url, api_key=token), seen)
    assert results.info.model == "tiny"
    for index, (level, users) in enumerate(zip(results.levels, (1, 4), strict=True)):
        assert level.ok == 12 and level.mean_output_tokens == TOKENS and level.mean_prompt_tokens == 40
        check_order(level, users, seen.by_level[index])


class _CancelAfterFirstLevel(Observer):
    def __init__(self) -> None:
        self.task: asyncio.Task[object] | None = None

    def level_done(self, index: int, result: LevelResult) -> None:
        assert self.task is not None
        self.task.cancel()


def test_interrupted_run_keeps_finished_levels() -> None:
    observer = _CancelAfterFirstLevel()

    async def go() -> object:
        observer.task = asyncio.current_task()
        return await bench_async(options(IN_PROCESS_URL, requests=3), observer)

    with pytest.raises(BenchInterrupted) as info:
        run_virtual(go())
    partial = info.value.results
    assert [lv.label for lv in partial.levels] == ["1 user"]
    assert partial.levels[0].ok == 3
    assert "interrupted during 4 users" in partial.warnings[-1]
    assert info.value.exit_code == 130
