"""Keys, limits and usage on a real PostgreSQL server (Debian's postgresql), shared by two gateway
processes: N requests at once against a limit of M admit exactly M across both.

The server is started once per session: ``initdb`` and ``pg_ctl`` as the ``postgres`` user (the
server refuses to run as root) in a temporary directory, listening on a Unix socket only.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from airlock.errors import UnknownKeyError
from airlock.gateway.apikeys import KeyLimits, KeyStore
from airlock.gateway.auth import KeyCache
from airlock.gateway.errors import APIError
from airlock.gateway.limits import Lease, Limiter
from airlock.gateway.state import PostgresState, Window
from gateway_procs import burst, chat, hang_open, hold, start_gateways, stop

pytestmark = pytest.mark.integration
psycopg = pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of its own; yields a URL for a fresh database on its Unix socket."""
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="airlock-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    root.chmod(0o755)
    port = "5439"
    subprocess.run(
        _as_postgres(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"),
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-c listen_addresses='' -c unix_socket_directories={sock} -p {port} -c fsync=off"
    subprocess.run(
        _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"),
        check=True, capture_output=True,
    )  # fmt: skip
    admin = f"postgresql://postgres@/postgres?host={sock}&port={port}"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE airlock")
        yield f"postgresql://postgres@/airlock?host={sock}&port={port}"
    finally:
        subprocess.run(
            _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"), check=False
        )
        shutil.rmtree(root, ignore_errors=True)


def _window(url: str, key_id: str) -> Window:
    async def read() -> Window:
        state = await PostgresState.open(url, size=1)
        window = await state.window(key_id)
        await state.close()
        assert window is not None
        return window

    return asyncio.run(read())


def test_the_key_store_on_postgresql(postgres: str) -> None:
    store = KeyStore(postgres)
    key, token = store.create(
        "pg-alice", models=["tiny"], scopes=["chat", "metrics"], limits=KeyLimits(rpm=5)
    )
    assert store.authenticate(token) == key
    assert [k.name for k in store.list()] == ["pg-alice"]
    store.revoke("pg-alice")
    assert store.authenticate(token) is None
    with pytest.raises(UnknownKeyError):
        store.revoke("pg-alice")
    assert [k.name for k in store.list(include_revoked=True)] == ["pg-alice"]


def test_concurrent_admissions_on_postgresql_take_exactly_the_limit(postgres: str) -> None:
    store = KeyStore(postgres)
    key, _ = store.create("pg-burst", limits=KeyLimits(rpm=11, concurrency=100))

    async def scenario() -> list[Lease | BaseException]:
        limiter = Limiter(KeyCache(store), CollectorRegistry())
        await limiter.start()
        results = await asyncio.gather(
            *(limiter.admit(key, "chat", chat()) for _ in range(40)), return_exceptions=True
        )
        for lease in results:
            if not isinstance(lease, BaseException):
                await limiter.settle(lease, {"prompt_tokens": 1, "completion_tokens": 3}, started=True)
        await limiter.close()
        return results

    results = asyncio.run(scenario())
    assert sum(not isinstance(r, BaseException) for r in results) == 11
    assert {r.param for r in results if isinstance(r, APIError)} == {"rpm"}
    window = _window(postgres, key.key_id)
    assert (window.minute_requests, window.in_flight) == (11, 0)
    assert store.usage()[key.key_id].completion_total == 33


def test_two_gateway_processes_on_postgresql_admit_exactly_the_limit(postgres: str, tmp_path: Path) -> None:
    store = KeyStore(postgres)
    procs, urls = start_gateways(postgres, 2, tmp_path)
    try:
        _, token = store.create("pg-rpm", limits=KeyLimits(rpm=9))  # created after both started
        answers = asyncio.run(burst(urls, token, 30, chat()))
        assert sorted(r.status_code for r in answers) == [200] * 9 + [429] * 21
        key, token = store.create("pg-conc", limits=KeyLimits(concurrency=4))
        assert sorted(asyncio.run(hold(urls, token, 16))) == [200] * 4 + [429] * 12
        deadline = 200
        while _window(postgres, key.key_id).in_flight != 0:
            deadline -= 1
            assert deadline > 0, "the streams' slots were not released"
            asyncio.run(asyncio.sleep(0.05))
        _, token = store.create("pg-tpm", limits=KeyLimits(tpm=50))  # 12 tokens per hanging stream
        assert sorted(asyncio.run(hold(urls, token, 10))) == [200] * 4 + [429] * 6
        store.revoke("pg-tpm")
        import httpx

        for url in urls:
            assert (
                httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 401
            )
    finally:
        stop(procs)


def test_slots_of_a_gateway_killed_mid_request_are_freed_on_postgresql(postgres: str, tmp_path: Path) -> None:
    import signal

    import httpx

    store = KeyStore(postgres)
    procs, urls = start_gateways(postgres, 2, tmp_path)
    held = []
    try:
        key, token = store.create("pg-killed", limits=KeyLimits(concurrency=2))
        held = [hang_open(urls[0], token) for _ in range(2)]
        auth = {"Authorization": f"Bearer {token}"}
        refused = httpx.post(urls[1] + "/v1/chat/completions", json=chat(), headers=auth, timeout=30)
        assert (refused.status_code, refused.json()["error"]["param"]) == (429, "concurrency")
        procs[1].send_signal(signal.SIGKILL)  # the first gateway (procs[0] is the engine)
        procs[1].wait(10)
        deadline = 400
        while _window(postgres, key.key_id).in_flight != 0:  # the other frees them (pid gone)
            deadline -= 1
            assert deadline > 0, "the killed gateway's slots were not freed"
            asyncio.run(asyncio.sleep(0.05))
        statuses = [
            httpx.post(urls[1] + "/v1/chat/completions", json=chat(), headers=auth, timeout=30).status_code
            for _ in range(2)
        ]
        assert statuses == [200, 200]
    finally:
        for sock in held:
            sock.close()
        stop([p for p in procs if p.poll() is None])
