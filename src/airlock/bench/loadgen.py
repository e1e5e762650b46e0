"""The load itself: closed-loop users or open-loop arrivals, bounded by a request count, a time, or both.

* Closed loop (``Load("concurrency", n)``): ``n`` users, each sending its next request as soon as
  its last one is answered. This is what a fixed pool of clients does; throughput against ``n``
  shows where the server saturates.
* Open loop (``Load("rate", r)``): requests arrive at ``r`` per second whether or not earlier ones
  were answered, spaced by exponential gaps (``poisson``) or evenly (``constant``). This is what
  many independent users do; latency against ``r`` shows the queue building.

No request starts once the level's bound is reached (``requests`` sent or ``duration_s`` elapsed);
requests already sent are waited for (each within the request timeout), so no latency is cut
short and every level ends by itself. A level's wall time runs from its start to its last answer,
on the sender's clock (:attr:`Sender.clock`), which tests replace with a virtual one.

    run = await run_level(sender, prompts, Load("concurrency", 8), requests=200, duration_s=None)
    run.records, run.duration_s
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airlock.bench.client import RequestRecord, Sender
from airlock.bench.options import Arrival, Load
from airlock.bench.workload import Prompts

#: After a connection is refused, a closed-loop user waits this long before its next request,
#: so a dead endpoint is recorded as errors without spinning the CPU.
CONNECT_BACKOFF_S = 0.05
TICK_S = 0.25


@dataclass(frozen=True)
class LevelRun:
    records: list[RequestRecord]
    duration_s: float


def arrival_offsets(rate: float, arrival: Arrival, rng: random.Random) -> Callable[[], float]:
    """A function giving successive arrival times (seconds from the level's start), the first at 0.

    Constant arrivals are ``n / rate``, not a running sum of ``1 / rate``: summing drifts (ten gaps
    of 0.05 s make 0.49999999999999994), which would let one more request in before a 0.5 s bound.
    """
    state = {"t": 0.0, "n": 0}

    def next_offset() -> float:
        if arrival != "poisson":
            n = state["n"]
            state["n"] += 1
            return n / rate
        now = state["t"]
        state["t"] += rng.expovariate(rate)
        return now

    return next_offset


async def _closed_loop(
    sender: Sender,
    prompts: Prompts,
    users: int,
    *,
    origin: float,
    requests: int | None,
    deadline: float,
    done: Callable[[RequestRecord], None],
) -> None:
    issued = 0

    async def user() -> None:
        nonlocal issued
        while (requests is None or issued < requests) and sender.clock() < deadline:
            issued += 1
            record = await sender.send(prompts.next(), origin)
            done(record)
            if record.error == "connect":
                await asyncio.sleep(CONNECT_BACKOFF_S)

    await asyncio.gather(*(user() for _ in range(users)))


async def _open_loop(
    sender: Sender,
    prompts: Prompts,
    rate: float,
    *,
    origin: float,
    requests: int | None,
    deadline: float,
    arrival: Arrival,
    rng: random.Random,
    done: Callable[[RequestRecord], None],
) -> None:
    next_offset = arrival_offsets(rate, arrival, rng)
    tasks: list[asyncio.Task[None]] = []

    async def one(prompt: Any) -> None:
        done(await sender.send(prompt, origin))

    try:
        while requests is None or len(tasks) < requests:
            at = origin + next_offset()
            if at >= deadline:
                break
            delay = at - sender.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(prompts.next())))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_level(
    sender: Sender,
    prompts: Prompts,
    load: Load,
    *,
    requests: int | None,
    duration_s: float | None,
    arrival: Arrival = "poisson",
    seed: int = 0,
    on_record: Callable[[RequestRecord], None] | None = None,
    on_tick: Callable[[float, int], None] | None = None,
) -> LevelRun:
    """Run one level to its bound; ``on_record`` sees each request as it ends, ``on_tick`` the time
    elapsed and requests in flight every quarter second."""
    if requests is None and duration_s is None:
        raise ValueError("a level needs a bound: requests, duration_s or both")
    records: list[RequestRecord] = []
    started = [0]

    def done(record: RequestRecord) -> None:
        records.append(record)
        if on_record is not None:
            on_record(record)

    async def ticker() -> None:
        while on_tick is not None:
            await asyncio.sleep(TICK_S)
            on_tick(sender.clock() - origin, started[0] - len(records))

    class _Counting:
        """Counts prompts handed out: each is a request that has started."""

        def next(self) -> Any:
            started[0] += 1
            return prompts.next()

        def describe(self) -> str:
            return prompts.describe()

    origin = sender.clock()
    deadline = origin + duration_s if duration_s is not None else math.inf
    tick = asyncio.create_task(ticker())
    try:
        if load.kind == "concurrency":
            await _closed_loop(
                sender,
                _Counting(),
                load.users,
                origin=origin,
                requests=requests,
                deadline=deadline,
                done=done,
            )
        else:
            await _open_loop(
                sender, _Counting(), load.value, origin=origin, requests=requests, deadline=deadline,
                arrival=arrival, rng=random.Random(seed), done=done,
            )  # fmt: skip
    finally:
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
    return LevelRun(records=records, duration_s=sender.clock() - origin)
