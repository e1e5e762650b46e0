"""The console against an attacker: login guessing is braked per client address, a change must be a
JSON request, a login replaces any session the browser held, and a key database that is down is a
503 (not a failed login, not a 500). Through the gateway's ASGI app, in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from airlock.errors import KeyStoreError
from airlock.gateway.console import throttle
from airlock.gateway.console.throttle import LoginThrottle
from airlock.gateway.errors import APIError
from unit.gateway.test_console import STATIC, Site, login, run


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_logins_from_one_address_must_wait_and_a_good_one_clears_it(tmp_path: Path) -> None:
    site = Site(tmp_path)
    clock = Clock()
    site.app.console.login_throttle.clock = clock

    async def scenario(c: httpx.AsyncClient) -> None:
        for i in range(throttle.FREE_FAILURES):
            assert (await login(c, f"al-guess-{i}")).status_code == 401
        # the free failures are spent: the next failure sets a wait of 1 s, the one after 2 s
        assert (await login(c, "al-guess-x")).status_code == 401
        braked = await login(c, site.admin)  # even the right key waits: guessing gains nothing
        assert braked.status_code == 429 and braked.headers["retry-after"] == "1"
        assert braked.json()["error"]["code"] == "login_throttled" and "set-cookie" not in braked.headers
        clock.now += 1
        assert (await login(c, "al-guess-y")).status_code == 401
        assert (await login(c, site.admin)).headers["retry-after"] == "2"
        clock.now += 2
        assert (await login(c, site.admin)).status_code == 200
        assert (await login(c, "al-guess-z")).status_code == 401, "a good login starts afresh"

    run(site, scenario)
    actions = [x["action"] for x in site.admin_lines()]
    assert actions == ["console_login_failed"] * 7 + ["console_login", "console_login_failed"]


def test_guesses_sent_at_once_are_braked_too(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.app.console.login_throttle.clock = Clock()
    statuses: list[int] = []

    async def scenario(c: httpx.AsyncClient) -> None:
        answers = await asyncio.gather(*(login(c, f"al-guess-{i}") for i in range(40)))
        statuses.extend(r.status_code for r in answers)

    run(site, scenario)
    # each attempt is counted before its first await: the sixth sets a wait and the rest are braked
    assert sorted(statuses) == [401] * (throttle.FREE_FAILURES + 1) + [429] * (
        40 - throttle.FREE_FAILURES - 1
    )
    assert len(site.admin_lines()) == throttle.FREE_FAILURES + 1, "a braked guess writes no audit line"


def test_refused_cross_site_logins_count_as_failures(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.app.console.login_throttle.clock = Clock()

    async def scenario(c: httpx.AsyncClient) -> None:
        for _ in range(throttle.FREE_FAILURES + 1):
            form = await c.post(
                "/console/api/login", content=b'{"key": "x"}', headers={"content-type": "text/plain"}
            )
            assert form.status_code == 403
        assert (await login(c, site.admin)).status_code == 429

    run(site, scenario)
    assert len(site.admin_lines()) == throttle.FREE_FAILURES + 1, "the braked attempt writes no audit line"


def test_the_wait_doubles_up_to_a_cap_is_forgotten_and_memory_is_bounded() -> None:
    clock = Clock()
    brake = LoginThrottle(max_clients=3, clock=clock)
    waits = []
    for _ in range(throttle.FREE_FAILURES + 12):
        brake.failed("10.0.0.1")
        waits.append(brake.wait_s("10.0.0.1"))
    assert waits[: throttle.FREE_FAILURES] == [0.0] * throttle.FREE_FAILURES
    assert waits[throttle.FREE_FAILURES :][:7] == [1, 2, 4, 8, 16, 32, throttle.MAX_WAIT_S]
    assert max(waits) == throttle.MAX_WAIT_S
    assert brake.wait_s("10.0.0.2") == 0.0, "another address is not braked"
    clock.now += throttle.FORGET_S
    assert brake.wait_s("10.0.0.1") == 0.0
    for n in range(10):
        brake.failed(f"10.0.1.{n}")
    assert len(brake._clients) == 3 and list(brake._clients) == ["10.0.1.7", "10.0.1.8", "10.0.1.9"]


def test_a_change_must_be_a_json_request(tmp_path: Path) -> None:
    site = Site(tmp_path)

    async def scenario(c: httpx.AsyncClient) -> None:
        csrf = (await login(c, site.admin)).json()["csrf"]
        plain = await c.post("/console/api/keys", content=b'{"name": "bob"}',
                             headers={"X-CSRF-Token": csrf, "content-type": "text/plain"})  # fmt: skip
        assert plain.status_code == 403 and "not a JSON request" in plain.json()["error"]["message"]
        assert [k.name for k in site.keys.list()] == ["ops", "alice"]

    run(site, scenario)
    assert site.admin_lines()[-1]["reason"] == "not a JSON request"


def test_a_login_ends_the_session_the_browser_held(tmp_path: Path) -> None:
    site = Site(tmp_path)

    async def scenario(c: httpx.AsyncClient) -> None:
        await login(c, site.admin)
        first = c.cookies["airlock_console"]
        await login(c, site.admin)
        assert c.cookies["airlock_console"] != first
        c.cookies.clear()
        c.cookies.set("airlock_console", first, domain="gw.test", path="/console")
        assert (await c.get("/console/api/session")).status_code == 401

    run(site, scenario)


def test_a_key_database_that_is_down_is_a_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = Site(tmp_path)
    console = site.app.console

    async def down(*args: object) -> None:
        raise APIError(503, "the gateway cannot use its key database", code="key_store_unavailable")

    def broken(token: str) -> None:
        raise KeyStoreError("key database keys.db: database is locked")

    async def scenario(c: httpx.AsyncClient) -> None:
        await login(c, site.admin)
        assert console.keys is not None and console.sessions is not None
        monkeypatch.setattr(console.sessions, "find", broken)
        page = await c.get("/console/api/keys")
        assert page.status_code == 503 and page.json()["error"]["code"] == "key_store_unavailable"
        assert page.headers["retry-after"] == "1"
        monkeypatch.setattr(console.keys, "authenticate", down)
        c.cookies.clear()
        r = await login(c, site.admin)
        assert r.status_code == 503 and r.json()["error"]["code"] == "key_store_unavailable"

    run(site, scenario)
    assert [x["action"] for x in site.admin_lines()] == ["console_login"], "an outage is no failed login"
    assert console.login_throttle.wait_s("127.0.0.1") == 0 and not console.login_throttle._clients


def test_the_page_opens_only_its_own_views() -> None:
    js = (STATIC / "console.js").read_text()
    assert "Object.hasOwn(loaders, name)" in js, "#constructor or #__proto__ would call Object's own members"
