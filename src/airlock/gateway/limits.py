"""Per-key limits, exact under concurrency and across gateways, and per-engine concurrency with a queue.

A request on a key with limits is admitted by one conditional UPDATE in the shared database
(``gateway/state.py``): requests per minute, tokens per minute and per UTC day, requests in flight.
Tokens are reserved at admission and settled when the answer ends:

    reserved = the prompt's estimate + (max_completion_tokens, else max_tokens, else
               DEFAULT_COMPLETION_RESERVE) x n           (embeddings: the prompt's estimate alone)
    settled  = the engine's usage (prompt + completion tokens), streamed or not; with no usage, a
               reservation is released when no answer started (an error, a client gone early) and
               kept when a stream started and broke off (the engine spent tokens we cannot count)

The prompt's estimate is exact for token-id prompts and ``ceil(characters / 4)`` plus 4 per chat
message for text; the real count replaces it at settlement. A key without limits never touches the
database on the request path. Every key's usage (requests and tokens, today and in total, last
use) is added up in memory and written in one batch a second.

Refusals are 429s in OpenAI's shape, ``code: rate_limit_exceeded``, ``param`` naming the limit
(rpm, tpm, tpd, concurrency), with ``Retry-After`` (the end of the minute or day; 1 s for
concurrency); a request that could never fit (more tokens than the limit) is refused without it.

Engines: at most ``limit`` requests in flight per engine; the next ``queue`` wait (first come, first
served), and beyond that a 503 with Retry-After at once. Time spent waiting is
``airlock_engine_queue_seconds{engine}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from airlock.gateway.apikeys import ApiKey, KeyLimits, utc_day
from airlock.gateway.errors import APIError, key_store_unavailable
from airlock.gateway.state import HotState, UsageRow

if TYPE_CHECKING:
    from airlock.gateway.auth import KeyCache

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("airlock.gateway")

#: Completion tokens reserved for a request that gives neither max_completion_tokens nor max_tokens.
DEFAULT_COMPLETION_RESERVE = 1024
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_UNITS = {
    "rpm": "requests per minute",
    "tpm": "tokens per minute",
    "tpd": "tokens per day",
    "concurrency": "requests at once",
}


def _text_tokens(value: object) -> int:
    """Tokens in a prompt or input: counted for token ids, estimated (chars / 4) for text."""
    if isinstance(value, str):
        return math.ceil(len(value) / 4)
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return len(value)
        return sum(_text_tokens(v) for v in value)
    if isinstance(value, dict):  # a content part: {"type": "text", "text": ...}
        return _text_tokens(value.get("text"))
    return 0


def estimate_prompt_tokens(kind: str, data: dict[str, Any]) -> int:
    if kind == "chat":
        messages = data.get("messages")
        if not isinstance(messages, list):
            return 0
        return sum(
            4 + _text_tokens(m.get("content")) for m in messages if isinstance(m, dict)
        )  # 4: the role and the template's markers
    return _text_tokens(data.get("prompt" if kind == "completions" else "input"))


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def reserve_tokens(
    kind: str, data: dict[str, Any], default_completion: int = DEFAULT_COMPLETION_RESERVE
) -> int:
    """The tokens a request may use at most, as far as the gateway can tell before it runs."""
    prompt = estimate_prompt_tokens(kind, data)
    if kind == "embeddings":
        return prompt
    most = _int(data.get("max_completion_tokens"))
    if most is None:
        most = _int(data.get("max_tokens"))
    if most is None:
        most = default_completion
    choices = max(_int(data.get("n")) or 1, _int(data.get("best_of")) or 1)
    return prompt + most * choices


@dataclass
class Lease:
    """An admitted request's reservation, settled once when it ends."""

    key: ApiKey
    tokens: int
    minute: int
    day: int
    limited: bool
    settled: bool = False
    ticket: int = 0  # the key database's, from the admission (see HotState.admit)


#: A key's limits as admit() uses them: the database's checks ((name, limit) in _CHECKS' order),
#: whether tokens are reserved, and the token limits (name, limit) a single request may not exceed.
_Plan = tuple[tuple[tuple[str, int], ...], bool, tuple[tuple[str, int], ...]]


def _plan(limits: KeyLimits) -> _Plan:
    checks = tuple(
        (name, value)
        for name, value in (
            ("rpm", limits.rpm),
            ("tpm", limits.tpm),
            ("tpd", limits.tpd),
            ("concurrency", limits.concurrency),
        )
        if value is not None
    )
    return checks, limits.tokens, tuple(c for c in checks if c[0] in ("tpm", "tpd"))


@dataclass
class _Usage:
    requests: int = 0
    prompt: int = 0
    completion: int = 0
    last: float = 0.0


class Limiter:
    """Admission and settlement against the shared state, and usage counted in memory, flushed in batches."""

    def __init__(
        self,
        keys: KeyCache,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
        flush_s: float | None = None,
        default_completion: int = DEFAULT_COMPLETION_RESERVE,
    ) -> None:
        self.keys = keys
        self.clock = clock
        self.flush_s = keys.refresh_s if flush_s is None else flush_s
        self.default_completion = default_completion
        self._usage: dict[tuple[str, int], _Usage] = {}
        self._plans: dict[KeyLimits, _Plan] = {}
        self._task: asyncio.Task[None] | None = None
        self.refusals = Counter(
            "airlock_limit_refusals", "Requests refused by a key's limit", ["key", "limit"], registry=registry
        )

    # -- admission ------------------------------------------------------------------------------

    def _plan(self, limits: KeyLimits) -> _Plan:
        plan = self._plans.get(limits)
        if plan is None:
            if len(self._plans) >= 1024:  # keys' limits are few; never a leak however many there were
                self._plans.clear()
            plan = self._plans[limits] = _plan(limits)
        return plan

    async def admit(self, key: ApiKey, kind: str, data: dict[str, Any]) -> Lease:
        now = self.clock()
        minute, day = int(now // 60), utc_day(now)
        checks, reserves, caps = self._plan(key.limits)
        tokens = reserve_tokens(kind, data, self.default_completion) if reserves else 0
        lease = Lease(key, tokens, minute, day, limited=bool(checks))
        if not checks:
            return lease
        for name, limit in caps:
            if tokens > limit:
                self.refusals.labels(key.name, name).inc()
                raise APIError(
                    429,
                    f"this request may use up to {tokens} tokens (prompt and max_tokens x n), more than "
                    f"key '{key.name}' may use in all ({limit} {_UNITS[name]}): lower max_tokens",
                    param=name,
                    code="rate_limit_exceeded",
                )
        state = self.keys.state
        for _ in range(3):
            try:
                ticket = await state.admit(key.key_id, checks, tokens, minute, day)
                if ticket is not None:
                    lease.ticket = ticket
                    return lease
                refusal = await self._why(state, key, tokens, now)
            except (APIError, asyncio.CancelledError):
                raise
            except Exception as exc:  # KeyStoreError: locked past its timeout, deleted, damaged, down
                log.warning("key database %s: cannot check limits: %s", state.label, exc)
                raise key_store_unavailable("to check this key's limits") from exc
            if refusal is not None:
                raise refusal
            # the window moved between the UPDATE and the look (another request ended): try again
        raise APIError(429, f"key '{key.name}' is at a limit; retry shortly", code="rate_limit_exceeded",
                       headers={"Retry-After": "1"})  # fmt: skip

    async def _why(self, state: HotState, key: ApiKey, tokens: int, now: float) -> APIError | None:
        window = await state.window(key.key_id)
        if window is None:
            raise APIError(401, "Invalid or revoked API key.", code="invalid_api_key")
        minute, day = int(now // 60), utc_day(now)
        this_minute = window.minute == minute
        used = {
            "rpm": (window.minute_requests if this_minute else 0) + 1,
            "tpm": (window.minute_tokens if this_minute else 0) + tokens,
            "tpd": (window.day_tokens if window.day == day else 0) + tokens,
            "concurrency": window.in_flight + 1,
        }
        for name in ("concurrency", "rpm", "tpm", "tpd"):
            limit = getattr(key.limits, name)
            if limit is None or used[name] <= limit:
                continue
            if name == "concurrency":
                retry = 1
            elif name == "tpd":
                retry = math.ceil(86400 - now % 86400)
            else:
                retry = math.ceil(60 - now % 60)
            self.refusals.labels(key.name, name).inc()
            return APIError(
                429,
                f"key '{key.name}' reached its limit of {limit} {_UNITS[name]}; retry in {retry} s",
                param=name,
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry)},
            )
        if not key.active:
            return APIError(401, "Invalid or revoked API key.", code="invalid_api_key")
        return None

    async def settle(self, lease: Lease, usage: dict[str, Any] | None, *, started: bool) -> None:
        """The request ended: count its usage and correct the reservation by what it really used."""
        if lease.settled:
            return
        lease.settled = True
        if usage is None:
            prompt = completion = 0
        else:
            prompt = _int(usage.get("prompt_tokens")) or 0
            completion = _int(usage.get("completion_tokens")) or 0
        self.count(lease.key, prompt, completion)
        if not lease.limited:
            return
        # no usage: keep what a stream that broke off reserved (tokens were spent), release the rest
        delta = prompt + completion - lease.tokens if usage is not None else 0 if started else -lease.tokens
        try:
            await self.keys.state.settle(lease.key.key_id, delta, lease.minute, lease.day, lease.ticket)
        except Exception:  # the answer is out; the key keeps this request's slot and reservation
            log.exception("key database: could not settle a request of key %r", lease.key.name)

    # -- usage ----------------------------------------------------------------------------------

    def count(self, key: ApiKey, prompt: int, completion: int) -> None:
        now = self.clock()
        where = (key.key_id, utc_day(now))
        slot = self._usage.get(where)
        if slot is None:
            slot = self._usage[where] = _Usage()
        slot.requests += 1
        slot.prompt += prompt
        slot.completion += completion
        slot.last = now

    async def flush(self) -> None:
        if not self._usage:
            return
        batch, self._usage = self._usage, {}
        rows = [UsageRow(k, d, u.requests, u.prompt, u.completion, u.last) for (k, d), u in batch.items()]
        await self.keys.state.add_usage(rows)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except Exception as exc:  # a full disk or a lost database: say so, keep serving, try again
                log.warning("could not write key usage to the key database: %s", exc)
            try:  # apart from usage: a usage write that keeps failing must not stop the heartbeat,
                # or the other gateways would free this live one's leases after LEASE_TTL_S
                await self.keys.state.maintain()  # leases: heartbeat, and free those of dead gateways
            except Exception as exc:
                log.warning("could not renew this gateway's leases in the key database: %s", exc)

    async def start(self) -> None:
        """Open the key store (a database that cannot be opened fails the gateway's start) and write
        usage once every ``flush_s``."""
        await self.keys.open()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.keys.opened:
            await self.flush()
            await self.keys.close()


class _Gate:
    __slots__ = ("active", "limit", "queue", "waited", "waiters")

    def __init__(self, limit: int, queue: int, waited: Any) -> None:
        self.limit = limit
        self.queue = queue
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.waited = waited  # the engine's airlock_engine_queue_seconds


class EngineGates:
    """At most ``limit`` requests in flight per engine, ``queue`` more waiting, the rest refused at once."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        limit: int = 256,
        queue: int = 1024,
        limits: dict[str, int] | None = None,
    ) -> None:
        self.default_limit = limit
        self.default_queue = queue
        self.limits = dict(limits or {})
        self._gates: dict[str, _Gate] = {}
        self.wait_time = Histogram(
            "airlock_engine_queue_seconds", "Time a request waited for a free slot at its engine", ["engine"],
            buckets=QUEUE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.queued = Gauge(
            "airlock_engine_queued",
            "Requests waiting for a free slot at their engine",
            ["engine"],
            registry=registry,
            multiprocess_mode="livesum",  # with --workers: one sum over the live workers, not one per pid
        )
        self.rejected = Counter(
            "airlock_engine_queue_full", "Requests refused because the engine's queue was full", ["engine"],
            registry=registry,
        )  # fmt: skip

    def in_flight(self) -> dict[str, int]:
        """Requests running or waiting at each engine, as this process's gates hold them."""
        return {name: gate.active + len(gate.waiters) for name, gate in self._gates.items()}

    def _gate(self, engine: str) -> _Gate:
        gate = self._gates.get(engine)
        if gate is None:
            gate = self._gates[engine] = _Gate(
                self.limits.get(engine, self.default_limit), self.default_queue, self.wait_time.labels(engine)
            )
        return gate

    @contextlib.asynccontextmanager
    async def slot(self, engine: str) -> AsyncIterator[float]:
        """Hold one of the engine's slots; yields the seconds spent waiting for it."""
        gate = self._gate(engine)
        waited = 0.0
        if gate.active < gate.limit and not gate.waiters:
            gate.active += 1
        elif len(gate.waiters) >= gate.queue:
            self.rejected.labels(engine).inc()
            raise APIError(
                503,
                f"the model '{engine}' is busy ({gate.active} requests running, {len(gate.waiters)} waiting); "
                "retry shortly",
                code="engine_overloaded",
                headers={"Retry-After": "1"},
            )
        else:
            began = time.perf_counter()
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            gate.waiters.append(future)
            gauge = self.queued.labels(engine)
            gauge.inc()
            try:
                await future  # the slot is handed over by the request that leaves (active unchanged)
            except BaseException:
                if future.done() and not future.cancelled():
                    self._release(gate)  # it was handed a slot as it was cancelled: pass it on
                else:
                    with contextlib.suppress(ValueError):  # already passed over by a release
                        gate.waiters.remove(future)
                raise
            finally:
                gauge.dec()
            waited = time.perf_counter() - began
        gate.waited.observe(waited)
        try:
            yield waited
        finally:
            self._release(gate)

    async def run(self, engine: str, work: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """``await work(*args, **kwargs)`` holding one of the engine's slots."""
        gate = self._gate(engine)
        if gate.active < gate.limit and not gate.waiters:  # a free slot: slot()'s first case, inline
            gate.active += 1
            gate.waited.observe(0.0)
            try:
                return await work(*args, **kwargs)
            finally:
                self._release(gate)
        async with self.slot(engine):
            return await work(*args, **kwargs)

    @staticmethod
    def _release(gate: _Gate) -> None:
        while gate.waiters:
            future = gate.waiters.popleft()
            if not future.done():
                future.set_result(None)  # the slot passes straight to the first waiter
                return
        gate.active -= 1
