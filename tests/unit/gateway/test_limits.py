"""Per-key limits, scopes and the engines' queues: the real gateway in front of the fake engine.

The exactness tests fire N requests at once at a limit of M and count the answers: exactly M pass,
whatever the interleaving, in one gateway and in two gateway processes sharing one SQLite file.
Requests that must stay in flight ask the fake engine to "please hang" (it streams until the client
leaves), so no test depends on how fast anything runs.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from airlock.gateway.apikeys import KeyLimits, KeyStore
from airlock.gateway.auth import KeyCache
from airlock.gateway.errors import APIError
from airlock.gateway.limits import (
    DEFAULT_COMPLETION_RESERVE,
    EngineGates,
    Limiter,
    estimate_prompt_tokens,
    reserve_tokens,
)
from airlock.gateway.state import SqliteState, Window
from airlock.testing.fake_engine import REPLY
from gateway_procs import CHAT, burst, chat, hold, start_gateways, stop
from harness import GatewayThread, fake_engine_config

# -- what a request reserves -----------------------------------------------------------------------


def test_the_reservation_is_the_prompt_estimate_plus_the_most_it_may_generate() -> None:
    assert estimate_prompt_tokens("chat", chat("x" * 40)) == 4 + 10
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "y" * 8}]}]}
    assert estimate_prompt_tokens("chat", parts) == 4 + 2
    assert estimate_prompt_tokens("completions", {"prompt": [1, 2, 3, 4, 5]}) == 5  # token ids: exact
    assert estimate_prompt_tokens("embeddings", {"input": ["abcd", "efgh"]}) == 2
    assert reserve_tokens("chat", chat("x" * 40, max_tokens=100)) == 14 + 100
    # max_completion_tokens wins over max_tokens; n multiplies; neither: the default
    assert (
        reserve_tokens("chat", {**chat("x" * 40, max_tokens=100), "max_completion_tokens": 7, "n": 3})
        == 14 + 21
    )
    assert reserve_tokens("completions", {"prompt": [1, 2]}) == 2 + DEFAULT_COMPLETION_RESERVE
    assert reserve_tokens("completions", {"prompt": [1, 2], "max_tokens": 5, "best_of": 4}) == 2 + 20
    assert reserve_tokens("embeddings", {"input": "abcdefgh", "max_tokens": 50}) == 2


# -- the engines' queues ---------------------------------------------------------------------------


def test_an_engine_takes_its_limit_queues_the_next_and_refuses_the_rest() -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        gates = EngineGates(registry, limit=2, queue=2)
        release = asyncio.Event()
        order: list[int] = []

        async def request(i: int) -> None:
            async with gates.slot("m") as waited:
                order.append(i)
                assert (waited > 0) == (i >= 2)
                await release.wait()

        tasks = [asyncio.create_task(request(i)) for i in range(4)]
        await asyncio.sleep(0)
        assert order == [0, 1]  # two run, two wait
        assert registry.get_sample_value("airlock_engine_queued", {"engine": "m"}) == 2
        with pytest.raises(APIError) as info:
            async with gates.slot("m"):
                pass
        assert (info.value.status, info.value.code, info.value.headers) == (
            503,
            "engine_overloaded",
            {"Retry-After": "1"},
        )
        # a waiter that gives up frees its place in the queue and takes no slot
        tasks[3].cancel()
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*tasks[:3])
        assert order == [0, 1, 2]
        assert registry.get_sample_value("airlock_engine_queue_seconds_count", {"engine": "m"}) == 3
        assert registry.get_sample_value("airlock_engine_queue_full_total", {"engine": "m"}) == 1
        assert registry.get_sample_value("airlock_engine_queued", {"engine": "m"}) == 0
        assert gates._gate("m").active == 0

    asyncio.run(scenario())


# -- the limiter on its own, against SQLite ----------------------------------------------------------


def _window(store: KeyStore, key_id: str) -> Window:
    async def read() -> Window:
        state = SqliteState(store.db.target)  # type: ignore[arg-type]
        window = await state.window(key_id)
        await state.close()
        assert window is not None
        return window

    return asyncio.run(read())


def test_concurrent_admissions_take_exactly_the_limit_and_settle_to_the_real_usage(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("tina", limits=KeyLimits(tpm=1000, concurrency=5))
    body = chat("z" * 16, max_tokens=96)  # reserves 4 + 4 + 96 = 104 tokens

    async def scenario() -> list[Any]:
        cache = KeyCache(store)
        limiter = Limiter(cache, CollectorRegistry(), clock=lambda: 1_000_020.0)
        await limiter.start()
        results = await asyncio.gather(
            *(limiter.admit(key, "chat", body) for _ in range(12)), return_exceptions=True
        )
        leases = [r for r in results if not isinstance(r, BaseException)]
        for lease in leases:
            await limiter.settle(lease, {"prompt_tokens": 10, "completion_tokens": 20}, started=True)
        await limiter.close()
        return results

    results = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, APIError)]
    assert len(results) - len(refused) == 5  # concurrency 5 before tpm (9 x 104 > 1000) bites
    assert {(e.status, e.param) for e in refused} == {(429, "concurrency")}
    window = _window(store, key.key_id)
    assert (window.minute_requests, window.minute_tokens, window.day_tokens, window.in_flight) == (
        5,
        150,
        150,
        0,
    )
    assert store.usage()[key.key_id].completion_total == 100


def test_a_request_larger_than_the_limit_is_refused_without_a_retry(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("ugo", limits=KeyLimits(tpm=50))

    async def scenario() -> None:
        limiter = Limiter(KeyCache(store), CollectorRegistry())
        await limiter.start()
        with pytest.raises(APIError) as info:
            await limiter.admit(key, "chat", chat(max_tokens=100))
        assert (info.value.status, info.value.param, info.value.headers) == (429, "tpm", {})
        assert "lower max_tokens" in info.value.message
        await limiter.close()

    asyncio.run(scenario())


def test_limits_refill_with_the_next_minute_and_day(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("vic", limits=KeyLimits(rpm=1, tpd=30))
    now = [86400.0 * 20000 + 30]

    async def scenario() -> None:
        limiter = Limiter(KeyCache(store), CollectorRegistry(), clock=lambda: now[0])
        await limiter.start()
        lease = await limiter.admit(key, "chat", chat(max_tokens=5))
        await limiter.settle(lease, {"prompt_tokens": 5, "completion_tokens": 5}, started=True)
        with pytest.raises(APIError) as info:
            await limiter.admit(key, "chat", chat(max_tokens=5))
        assert (info.value.param, info.value.headers["Retry-After"]) == ("rpm", "30")
        now[0] += 60  # the next minute: a request again, 20 of 30 tokens left today
        lease = await limiter.admit(key, "chat", chat(max_tokens=5))
        await limiter.settle(lease, None, started=False)  # failed before an answer: released
        now[0] += 60
        lease = await limiter.admit(key, "chat", chat(max_tokens=5))
        await limiter.settle(lease, {"prompt_tokens": 5, "completion_tokens": 10}, started=True)
        now[0] += 60
        with pytest.raises(APIError) as info:
            await limiter.admit(key, "chat", chat(max_tokens=5))  # 25 used + 10 > 30
        assert info.value.param == "tpd"
        assert info.value.headers["Retry-After"] == str(86400 - 210)
        now[0] += 86400  # the next day
        await limiter.admit(key, "chat", chat(max_tokens=5))
        await limiter.close()

    asyncio.run(scenario())


# -- through the gateway -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, store: KeyStore) -> Iterator[GatewayThread]:
    thread = GatewayThread(
        [fake_engine_config("tiny")], tmp_path_factory.mktemp("logs"), keys=KeyCache(store, refresh_s=0.05)
    )
    with thread:
        yield thread


def _client(gw: GatewayThread, token: str) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_requests_per_minute_admit_exactly_the_limit(gw: GatewayThread, store: KeyStore) -> None:
    _, token = store.create("rpm7", limits=KeyLimits(rpm=7))
    answers = asyncio.run(burst([gw.url], token, 20, chat()))
    assert sorted(r.status_code for r in answers) == [200] * 7 + [429] * 13
    refused = next(r for r in answers if r.status_code == 429)
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "rate_limit_error",
        "rate_limit_exceeded",
        "rpm",
    )
    assert "limit of 7 requests per minute" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_requests_at_once_admit_exactly_the_limit_and_free_their_slot(
    gw: GatewayThread, store: KeyStore
) -> None:
    key, token = store.create("conc3", limits=KeyLimits(concurrency=3))
    assert sorted(asyncio.run(hold([gw.url], token, 12))) == [200] * 3 + [429] * 9
    _wait_for(lambda: _window(store, key.key_id).in_flight == 0, "the streams' slots were not released")
    with _client(gw, token) as http:
        assert http.post(CHAT, json=chat()).status_code == 200


def test_tokens_are_settled_to_the_engines_usage_streamed_or_not(gw: GatewayThread, store: KeyStore) -> None:
    key, token = store.create("tok", limits=KeyLimits(tpm=100_000))
    with _client(gw, token) as http:
        plain = http.post(CHAT, json=chat("one two", max_tokens=500))
        assert plain.status_code == 200
        with http.stream("POST", CHAT, json=chat("three", max_tokens=400, stream=True)) as r:
            assert r.status_code == 200
            assert "usage" not in r.read().decode()  # the usage chunk the gateway asked for is dropped
    used = plain.json()["usage"]["total_tokens"]
    streamed = 1 + len(REPLY.split())  # the fake engine counts words: one in, the whole reply out
    assert used == 2 + len(REPLY.split())
    # reserved 4 + 2 + 500 and 4 + 2 + 400; settled to what the engine said it used
    _wait_for(lambda: _window(store, key.key_id).minute_tokens == used + streamed, "tokens not settled")
    assert _window(store, key.key_id).in_flight == 0


def test_tokens_per_minute_admit_exactly_what_fits(gw: GatewayThread, store: KeyStore) -> None:
    # Each hanging stream reserves 4 + 3 + 5 = 12 tokens; 50 tokens a minute fit 4 of them.
    _, token = store.create("tpm50", limits=KeyLimits(tpm=50))
    assert sorted(asyncio.run(hold([gw.url], token, 10))) == [200] * 4 + [429] * 6


def test_metrics_need_the_metrics_scope_and_admin_keys_do_not_generate(
    gw: GatewayThread, store: KeyStore
) -> None:
    _, user = store.create("plain-user")
    _, reader = store.create("scraper", scopes=["metrics"])
    _, admin = store.create("admin", scopes=["admin"])
    with _client(gw, user) as http:
        denied = http.get("/metrics")
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "insufficient_scope"
        assert http.post(CHAT, json=chat()).status_code == 200
    with _client(gw, reader) as http:
        assert http.get("/metrics").status_code == 200
        assert http.post(CHAT, json=chat()).status_code == 403
        assert http.get("/v1/models").status_code == 403
    with _client(gw, admin) as http:
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        assert 'airlock_engine_queue_seconds_count{engine="tiny"}' in metrics.text
        refused = http.post(CHAT, json=chat())
        assert refused.status_code == 403
        assert "needs the 'chat' scope" in refused.json()["error"]["message"]
        assert http.get("/version").status_code == 200


def test_a_new_key_works_at_once_and_a_revoked_key_stops_at_once(gw: GatewayThread, store: KeyStore) -> None:
    for i in range(5):
        _, token = store.create(f"quick{i}")
        with _client(gw, token) as http:
            assert http.get("/v1/models").status_code == 200
            store.revoke(f"quick{i}")
            assert http.get("/v1/models").status_code == 401


def test_a_key_revoked_by_the_cli_is_refused_by_the_next_request_under_load(
    gw: GatewayThread, store: KeyStore, tmp_path: Path
) -> None:
    """`airlock keys revoke` in a process of its own, while other requests keep the gateway's loop
    busy (its generation checks are then shared within a turn of the loop): the first request sent
    after the command returned is refused."""
    assert isinstance(store.db.target, Path) and store.db.target.name == "keys.db"
    env = {**os.environ, "AIRLOCK_HOME": str(store.db.target.parent)}
    _, busy = store.create("busy", limits=KeyLimits(concurrency=64))
    done = threading.Event()
    statuses: list[int] = []

    def load() -> None:
        with _client(gw, busy) as http:
            while not done.is_set():
                statuses.append(http.post(CHAT, json=chat()).status_code)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for i in range(3):
            _, token = store.create(f"cli-revoked{i}")
            with _client(gw, token) as http:
                assert http.post(CHAT, json=chat()).status_code == 200
                revoked = subprocess.run(
                    [sys.executable, "-m", "airlock.cli.main", "keys", "revoke", f"cli-revoked{i}"],
                    env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert revoked.returncode == 0, revoked.stderr
                refused = http.post(CHAT, json=chat())
                assert refused.status_code == 401, refused.text
    finally:
        done.set()
        for worker in workers:
            worker.join(timeout=30)
    assert not any(worker.is_alive() for worker in workers)
    assert statuses and set(statuses) == {200}


def test_an_admin_key_does_not_bypass_its_own_limits(gw: GatewayThread, store: KeyStore) -> None:
    _, token = store.create("admin-limited", scopes=["admin"], limits=KeyLimits(rpm=1))
    _, user = store.create("user-limited", limits=KeyLimits(rpm=2))
    answers = asyncio.run(burst([gw.url], user, 4, chat()))
    assert sorted(r.status_code for r in answers) == [200, 200, 429, 429]
    with _client(gw, token) as http:
        assert http.post(CHAT, json=chat()).status_code == 403  # scope first: an admin key never generates


def test_keys_list_shows_usage(gw: GatewayThread, store: KeyStore) -> None:
    key, token = store.create("counted")
    with _client(gw, token) as http:
        for _ in range(3):
            assert http.post(CHAT, json=chat("a b c", max_tokens=2)).status_code == 200
    _wait_for(
        lambda: key.key_id in store.usage() and store.usage()[key.key_id].requests_total == 3, "no usage"
    )
    usage = store.usage()[key.key_id]
    assert (usage.requests_today, usage.prompt_today, usage.completion_today) == (3, 9, 6)
    assert usage.last_used_at is not None and usage.last_used_at <= time.time()


# -- two gateway processes, one SQLite file ------------------------------------------------------------


def test_two_gateway_processes_on_one_sqlite_file_admit_exactly_the_limit(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    store = KeyStore(db)
    procs, urls = start_gateways(str(db), 2, tmp_path)
    try:
        _, token = store.create("shared-rpm", limits=KeyLimits(rpm=9))  # created after both started
        answers = asyncio.run(burst(urls, token, 30, chat()))
        assert sorted(r.status_code for r in answers) == [200] * 9 + [429] * 21
        key, token = store.create("shared-conc", limits=KeyLimits(concurrency=4))
        assert sorted(asyncio.run(hold(urls, token, 16))) == [200] * 4 + [429] * 12
        _wait_for(lambda: _window(store, key.key_id).in_flight == 0, "slots not released")
        store.revoke("shared-conc")
        for url in urls:
            assert (
                httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 401
            )
    finally:
        stop(procs)


def test_a_key_database_that_stays_locked_is_a_503_not_a_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("wes", limits=KeyLimits(rpm=5))

    async def quick(target: Path) -> SqliteState:
        return SqliteState(target, busy_timeout_s=0.05)

    monkeypatch.setattr("airlock.gateway.auth.open_state", quick)

    async def scenario() -> None:
        limiter = Limiter(KeyCache(store), CollectorRegistry())
        await limiter.start()
        blocker = sqlite3.connect(tmp_path / "keys.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
        with pytest.raises(APIError) as info:
            await limiter.admit(key, "chat", chat())
        assert (info.value.status, info.value.code) == (503, "key_store_unavailable")
        blocker.execute("ROLLBACK")
        await limiter.admit(key, "chat", chat())
        await limiter.close()

    asyncio.run(scenario())


def test_an_admission_whose_client_left_while_it_was_written_is_undone(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("gone", limits=KeyLimits(tpm=1000, concurrency=1))

    async def scenario() -> Window | None:
        state = SqliteState(tmp_path / "keys.db")
        waiting = asyncio.create_task(state.admit(key.key_id, [("tpm", 1000), ("concurrency", 1)], 40, 5, 0))
        await asyncio.sleep(0)  # queued for this turn's batch
        waiting.cancel()  # the client leaves; the batch still admits it
        with pytest.raises(asyncio.CancelledError):
            await waiting
        for _ in range(100):  # the undo is a settlement: it joins a batch a few ms later
            window = await state.window(key.key_id)
            if window is not None and window.minute_requests == 1 and window.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert await state.admit(key.key_id, [("tpm", 1000), ("concurrency", 1)], 40, 5, 0) is not None
        await state.close()
        return window

    window = asyncio.run(scenario())
    assert window is not None
    assert (window.minute_requests, window.minute_tokens, window.in_flight) == (1, 0, 0)
