"""Closed and open loops: bounds are kept exactly, users never exceed the level, arrivals ignore answers.

Each level runs against the scripted server in-process, on virtual time: the times are exact.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
from typing import Any

import aiohttp
import pytest

from airlock.bench.client import Sender
from airlock.bench.loadgen import LevelRun, arrival_offsets, run_level
from airlock.bench.options import Load
from airlock.bench.stats import max_in_flight
from airlock.bench.workload import SyntheticPrompts
from airlock.testing.virtual_time import run_virtual

from .conftest import IN_PROCESS_URL, scripted_app, serve_unix


def level(load: Load, script: dict[str, Any], **bounds: Any) -> tuple[LevelRun, list[float]]:
    ticks: list[float] = []

    async def go() -> LevelRun:
        async with (
            serve_unix(scripted_app()) as connector,
            aiohttp.ClientSession(connector=connector) as session,
        ):
            sender = Sender(
                session, IN_PROCESS_URL + "/v1", model="a", endpoint="chat", extra_body={"script": script},
                clock=asyncio.get_running_loop().time,
            )  # fmt: skip
            prompts = SyntheticPrompts(5, output_tokens=4, endpoint="chat")
            return await run_level(sender, prompts, load, on_tick=lambda t, n: ticks.append(t), **bounds)

    return run_virtual(go()), ticks


def test_constant_arrivals_are_even() -> None:
    nxt = arrival_offsets(4.0, "constant", random.Random(0))
    assert [nxt() for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]


def test_poisson_arrivals_have_the_rate_and_are_seeded() -> None:
    nxt = arrival_offsets(8.0, "poisson", random.Random(1))
    times = [nxt() for _ in range(20001)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times[0] == 0.0
    assert statistics.fmean(gaps) == pytest.approx(1 / 8, rel=0.03)
    assert statistics.stdev(gaps) == pytest.approx(1 / 8, rel=0.05)  # exponential: sd equals mean
    again = arrival_offsets(8.0, "poisson", random.Random(1))
    assert [again() for _ in range(5)] == times[:5]


def test_closed_loop_keeps_the_request_bound_and_the_user_count() -> None:
    run, _ = level(Load("concurrency", 4), {"ttft": 0.05, "chunks": 2}, requests=18, duration_s=None)
    assert len(run.records) == 18 and all(r.ok for r in run.records)
    assert max_in_flight(run.records) == 4
    # 18 requests of >= 0.05 s over 4 users: at least 5 rounds.
    assert run.duration_s >= 5 * 0.05
    assert run.duration_s == pytest.approx(5 * 0.05)  # virtual time: five rounds exactly


def test_closed_loop_stops_starting_at_the_deadline_and_waits_for_answers() -> None:
    run, ticks = level(Load("concurrency", 2), {"ttft": 0.2, "chunks": 1}, requests=None, duration_s=0.5)
    starts = sorted(r.start for r in run.records)
    assert all(s < 0.5 for s in starts)
    assert 4 <= len(run.records) <= 6  # three rounds of 0.2 s fit in 0.5 s: 2 + 2 + 2
    assert all(r.ok for r in run.records)  # answers after the deadline are waited for, not cut
    assert run.duration_s >= 0.6
    assert ticks and ticks[0] == pytest.approx(0.25, abs=0.1)
    assert len(run.records) == 6 and run.duration_s == pytest.approx(0.6)  # virtual time: exact


def test_open_loop_sends_on_schedule_whatever_the_server_does() -> None:
    # Each answer takes 0.4 s, arrivals every 0.02 s: an open loop does not wait, so all 10 overlap.
    run, _ = level(
        Load("rate", 50),
        {"ttft": 0.4, "chunks": 1},
        requests=10,
        duration_s=None,
        arrival="constant",
    )
    starts = sorted(r.start for r in run.records)
    assert len(starts) == 10
    for i, start in enumerate(starts):
        assert start == pytest.approx(0.02 * i, abs=0.03)
    assert max_in_flight(run.records) == 10


def test_open_loop_duration_bound() -> None:
    run, _ = level(Load("rate", 20), {"chunks": 1}, requests=None, duration_s=0.5, arrival="constant")
    assert len(run.records) == 10  # arrivals at 0, 0.05, ... 0.45
    assert run.duration_s < 1.5
    assert run.duration_s == pytest.approx(0.45)  # virtual time: the last arrival, answered at once


def test_a_level_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="needs a bound"):
        level(Load("concurrency", 1), {}, requests=None, duration_s=None)
