"""The operator console's HTTP side through the gateway's ASGI app, in-process: the page and its
headers, login with an admin key only, the cookie's flags, CSRF on every change, expiry, logout,
and the admin lines in the audit log."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from airlock.engines.supervisor import EngineRuntime, EngineState
from airlock.gateway.apikeys import KeyStore
from airlock.gateway.app import Gateway, create_app
from airlock.gateway.audit_verify import verify
from airlock.gateway.auth import KeyCache
from airlock.gateway.routing import Router
from airlock.spec import GatewaySpec
from harness import fake_engine_config

STATIC = Path(__file__).parents[3] / "src" / "airlock" / "gateway" / "console" / "static"


class Site:
    def __init__(self, tmp_path: Path, *, audit: bool = True) -> None:
        self.keys = KeyStore(tmp_path / "keys.db")
        self.admin = self.keys.create("ops", scopes=["admin"])[1]
        self.user = self.keys.create("alice")[1]
        self.audit_path = tmp_path / "audit" / "audit.jsonl"
        spec = GatewaySpec(audit_log=self.audit_path if audit else None, audit_flush_ms=10,
                           console_session_ttl_s=600)  # fmt: skip
        runtime = EngineRuntime(config=fake_engine_config("tiny"), log_path=tmp_path / "tiny.log")
        runtime.state = EngineState.READY
        self.app: Gateway = create_app(
            spec, Router([runtime], aliases={"tiny": ["default"]}), KeyCache(self.keys)
        )

    def audit(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.audit_path.read_bytes().splitlines()]

    def admin_lines(self) -> list[dict[str, Any]]:
        return [line for line in self.audit() if line["event"] == "admin"]


@asynccontextmanager
async def client(site: Site, base: str = "http://gw.test") -> AsyncIterator[httpx.AsyncClient]:
    await site.app.startup()
    transport = httpx.ASGITransport(app=site.app, client=("127.0.0.1", 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=base) as c:
            yield c
    finally:
        await site.app.shutdown()


def run(
    site: Site, scenario: Callable[[httpx.AsyncClient], Awaitable[None]], base: str = "http://gw.test"
) -> None:
    async def main() -> None:
        async with client(site, base) as c:
            await scenario(c)

    asyncio.run(main())


async def login(c: httpx.AsyncClient, token: str) -> httpx.Response:
    return await c.post("/console/api/login", json={"key": token})


def test_the_page_and_its_assets_come_from_the_gateway_with_a_strict_csp(tmp_path: Path) -> None:
    site = Site(tmp_path)

    async def scenario(c: httpx.AsyncClient) -> None:
        page = await c.get("/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        for asset, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
            r = await c.get(f"/console/static/{asset}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
            again = await c.get(f"/console/static/{asset}", headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304
        assert (await c.get("/console/static/../app.py")).status_code == 404
        assert (await c.get("/console/api/engines")).status_code == 401

    run(site, scenario)


def test_the_assets_reach_nothing_outside_and_run_no_inline_script() -> None:
    html = (STATIC / "index.html").read_text()
    js = (STATIC / "console.js").read_text()
    css = (STATIC / "console.css").read_text()
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/console/static/console.js" defer>']
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handlers"
    assert not re.search(r"\sstyle\s*=", html), "inline styles"
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    assert not re.search(r"\beval\(|new Function|innerHTML|setTimeout\(\"", js)
    assert set(re.findall(r"https?://[^\s\"']+", js)) == {"http://www.w3.org/2000/svg"}  # a namespace name


def test_an_admin_key_logs_in_with_a_strict_cookie_and_a_user_key_never_does(tmp_path: Path) -> None:
    site = Site(tmp_path)

    async def scenario(c: httpx.AsyncClient) -> None:
        refused = await login(c, site.user)
        assert refused.status_code == 403 and "set-cookie" not in refused.headers
        assert refused.json()["error"]["code"] == "insufficient_scope"
        wrong = await login(c, site.admin[:-2] + "xx")
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        # a user key as a bearer token opens nothing in the console either
        bearer = await c.get("/console/api/keys", headers={"Authorization": f"Bearer {site.user}"})
        assert bearer.status_code == 401
        ok = await login(c, site.admin)
        assert ok.status_code == 200
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
        assert (
            "Max-Age=600" in cookie and "Secure" not in cookie
        )  # plain HTTP: a Secure cookie would never come back
        assert ok.json()["key"] == "ops" and len(ok.json()["csrf"]) >= 32
        engines = (await c.get("/console/api/engines")).json()["engines"]
        assert [(e["name"], e["state"], e["kind"]) for e in engines] == [("tiny", "ready", "fake")]
        models = (await c.get("/console/api/models")).json()["models"]
        assert models[0]["aliases"] == ["default"] and models[0]["keys"] == ["alice"]
        assert ok.headers["cache-control"] == "no-store"

    run(site, scenario)
    actions = [(x["action"], x["key"], x.get("reason")) for x in site.admin_lines()]
    assert actions == [
        ("console_login_failed", None, "insufficient_scope"),
        ("console_login_failed", None, "invalid_api_key"),
        ("console_login", "ops", None),
    ]
    assert all(x["client"] == "127.0.0.1" and x["via"] == "console" for x in site.admin_lines())


def test_the_cookie_is_secure_under_tls(tmp_path: Path) -> None:
    site = Site(tmp_path)

    async def scenario(c: httpx.AsyncClient) -> None:
        ok = await login(c, site.admin)
        assert ok.status_code == 200 and "; Secure" in ok.headers["set-cookie"]

    run(site, scenario, base="https://gw.test")


def test_every_change_needs_the_csrf_token_and_the_same_origin(tmp_path: Path) -> None:
    site = Site(tmp_path)

    async def scenario(c: httpx.AsyncClient) -> None:
        form = await c.post("/console/api/login", data={"key": site.admin})
        assert form.status_code == 403, "a cross-site form cannot log in"
        csrf = (await login(c, site.admin)).json()["csrf"]
        body = {"name": "bob", "models": ["tiny"], "rpm": 5}
        missing = await c.post("/console/api/keys", json=body)
        assert missing.status_code == 403 and missing.json()["error"]["code"] == "csrf_failed"
        wrong = await c.post("/console/api/keys", json=body, headers={"X-CSRF-Token": "x" * 43})
        assert wrong.status_code == 403
        foreign = await c.post("/console/api/keys", json=body,
                               headers={"X-CSRF-Token": csrf, "Origin": "http://evil.test"})  # fmt: skip
        assert foreign.status_code == 403
        cross = await c.post("/console/api/keys", json=body,
                             headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"})  # fmt: skip
        assert cross.status_code == 403
        assert [k.name for k in site.keys.list()] == ["ops", "alice"], "no refused change went through"
        made = await c.post("/console/api/keys", json=body,
                            headers={"X-CSRF-Token": csrf, "Origin": "http://gw.test"})  # fmt: skip
        assert made.status_code == 201
        token = made.json()["token"]
        key = site.keys.authenticate(token)
        assert key is not None and key.models == ("tiny",) and key.limits.rpm == 5
        keys = (await c.get("/console/api/keys")).json()["keys"]
        assert token.split("-")[2] not in orjson.dumps(keys).decode()
        revoke = await c.post(
            "/console/api/keys/revoke", json={"name": "bob"}, headers={"X-CSRF-Token": csrf}
        )
        assert revoke.status_code == 200 and site.keys.authenticate(token) is None
        typo = await c.post("/console/api/keys", json={"name": "carl", "models": ["tinyy"]},
                            headers={"X-CSRF-Token": csrf})  # fmt: skip
        assert typo.status_code == 400 and "did you mean 'tiny'" in typo.json()["error"]["message"]

    run(site, scenario)
    lines = site.admin_lines()
    assert [x["action"] for x in lines] == [
        "console_refused", "console_login", "console_refused", "console_refused", "console_refused",
        "console_refused", "key_create", "key_revoke",
    ]  # fmt: skip
    create = lines[6]
    assert (create["key"], create["target"], create["models"], create["limits"]) == (
        "ops",
        "bob",
        ["tiny"],
        {"rpm": 5},
    )
    assert "token" not in create and verify([site.audit_path]).ok


def test_a_session_expires_ends_at_logout_and_with_its_key(tmp_path: Path) -> None:
    site = Site(tmp_path)

    async def scenario(c: httpx.AsyncClient) -> None:
        sessions = site.app.console.sessions
        assert sessions is not None
        csrf = (await login(c, site.admin)).json()["csrf"]
        assert (await c.get("/console/api/session")).status_code == 200
        real = sessions.clock
        sessions.clock = lambda: real() + 601
        assert (await c.get("/console/api/session")).status_code == 401
        sessions.clock = real
        # logout: the cookie is cleared and the old one no longer opens anything
        csrf = (await login(c, site.admin)).json()["csrf"]
        old = c.cookies["airlock_console"]
        out = await c.post("/console/api/logout", json={}, headers={"X-CSRF-Token": csrf})
        assert out.status_code == 200 and "Max-Age=0" in out.headers["set-cookie"]
        c.cookies.set("airlock_console", old, domain="gw.test", path="/console")
        r = await c.get("/console/api/session")
        assert r.status_code == 401
        # a revoked admin key ends its sessions at once
        c.cookies.clear()
        await login(c, site.admin)
        site.keys.revoke("ops")
        assert (await c.get("/console/api/keys")).status_code == 401

    run(site, scenario)
    assert [x["action"] for x in site.admin_lines()] == [
        "console_login",
        "console_login",
        "console_logout",
        "console_login",
    ]


def test_the_console_is_off_without_keys(tmp_path: Path) -> None:
    runtime = EngineRuntime(config=fake_engine_config("tiny"), log_path=tmp_path / "tiny.log")
    app = create_app(GatewaySpec(), Router([runtime]), None)

    async def main() -> None:
        await app.startup()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as c:
                r = await c.get("/console")
                assert r.status_code == 404 and r.json()["error"]["code"] == "console_off"
        finally:
            await app.shutdown()

    asyncio.run(main())


def test_the_audit_view_filters_and_verifies_the_chain(tmp_path: Path) -> None:
    site = Site(tmp_path)

    async def scenario(c: httpx.AsyncClient) -> None:
        await login(c, site.user)  # a failed login: one admin line
        await login(c, site.admin)
        assert (
            await c.get("/v1/models", headers={"Authorization": f"Bearer {site.user}"})
        ).status_code == 200
        await asyncio.sleep(0.1)
        lines = (await c.get("/console/api/audit?event=request")).json()["lines"]
        assert [(x["route"], x["key"]) for x in lines] == [("/v1/models", "alice")]
        failed = (await c.get("/console/api/audit?event=admin&action=console_login_failed")).json()["lines"]
        assert len(failed) == 1
        checked = (await c.get("/console/api/audit/verify")).json()
        assert checked["ok"] is True and checked["lines"] >= 4
        assert not any(x["route"].startswith("/console") for x in site.audit() if x["event"] == "request")

    run(site, scenario)
    # an edited line shows as a broken chain
    raw = site.audit_path.read_bytes().replace(b'"alice"', b'"mallory"', 1)
    site.audit_path.write_bytes(raw)
    site2 = Site.__new__(Site)
    site2.__dict__.update(site.__dict__)

    async def again(c: httpx.AsyncClient) -> None:
        await login(c, site.admin)
        checked = (await c.get("/console/api/audit/verify")).json()
        assert checked["ok"] is False and "hash does not match" in checked["problems"][0]

    run(site2, again)


@pytest.mark.parametrize("path", ["/console/api/nothing", "/console/other"])
def test_unknown_console_paths_are_404(tmp_path: Path, path: str) -> None:
    site = Site(tmp_path)

    async def scenario(c: httpx.AsyncClient) -> None:
        await login(c, site.admin)
        assert (await c.get(path)).status_code == 404

    run(site, scenario)


def test_no_change_the_audit_log_cannot_record(tmp_path: Path) -> None:
    site = Site(tmp_path)

    async def scenario(c: httpx.AsyncClient) -> None:
        csrf = (await login(c, site.admin)).json()["csrf"]
        assert site.app.audit is not None
        site.app.audit.problem = "No space left on device"  # as the writer sets it when a batch fails
        made = await c.post("/console/api/keys", json={"name": "bob"}, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 503 and made.json()["error"]["code"] == "audit_unavailable"
        revoke = await c.post(
            "/console/api/keys/revoke", json={"name": "alice"}, headers={"X-CSRF-Token": csrf}
        )
        assert revoke.status_code == 503
        c.cookies.clear()
        assert (await login(c, site.admin)).status_code == 503
        assert [k.name for k in site.keys.list()] == ["ops", "alice"]
        assert (await c.get("/console")).status_code == 200, "the page itself still loads"

    run(site, scenario)
