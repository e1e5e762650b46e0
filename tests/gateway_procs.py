"""Gateways in processes of their own in front of the fake engine, and bursts of requests at them:
what the limit tests (tests/unit/gateway/test_limits.py, tests/integration/test_limits_postgres.py) share."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from airlock.engines.base import free_port
from harness import wait_healthy

CHAT = "/v1/chat/completions"


def chat(content: str = "hi", max_tokens: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        **extra,
    }


async def burst(urls: list[str], token: str, n: int, body: dict[str, Any]) -> list[httpx.Response]:
    """``n`` requests at once, spread over ``urls``; each answer read in full.

    Per-minute limits count in fixed UTC minutes: a burst does not start in the last 10 s of one, so
    that it cannot straddle two windows (the tests count admissions against one limit)."""
    if time.time() % 60 > 50:
        await asyncio.sleep(60.2 - time.time() % 60)
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=60, limits=limits
    ) as client:
        return list(
            await asyncio.gather(*(client.post(urls[i % len(urls)] + CHAT, json=body) for i in range(n)))
        )


async def hold(urls: list[str], token: str, n: int) -> list[int]:
    """``n`` streams at once that never end by themselves; the statuses once every one has its own."""
    statuses: list[int] = []
    everyone = asyncio.Event()
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)

    async def one(client: httpx.AsyncClient, url: str) -> None:
        async with client.stream(
            "POST", url + CHAT, json=chat("please hang", max_tokens=5, stream=True)
        ) as r:
            statuses.append(r.status_code)
            if len(statuses) == n:
                everyone.set()
            await everyone.wait()

    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=60, limits=limits
    ) as client:
        await asyncio.gather(*(one(client, urls[i % len(urls)]) for i in range(n)))
    return statuses


def hang_open(url: str, token: str) -> socket.socket:
    """A stream that never ends by itself, admitted (its status line read); the socket stays open
    until the caller closes it (or the gateway dies)."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(chat("please hang", max_tokens=5, stream=True)).encode()
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    status = sock.recv(64)
    assert status.startswith(b"HTTP/1.1 200"), f"the stream was not admitted: {status!r}"
    return sock


LAUNCH = """
import sys
from pathlib import Path

import uvloop

from airlock.engines.base import EngineConfig
from airlock.engines.supervisor import Supervisor
from airlock.gateway.apikeys import KeyStore
from airlock.gateway.auth import KeyCache
from airlock.serving.stack import bind, serve_engines
from airlock.spec import GatewaySpec

db, engine, port, logs = sys.argv[1:5]
config = EngineConfig(name="tiny", kind="remote", base_url=engine, upstream_model="tiny", launch=None)
supervisor = Supervisor([config], log_dir=Path(logs))
target = db if db.startswith("postgresql://") else Path(db)
uvloop.run(serve_engines(supervisor, GatewaySpec(), bind("127.0.0.1", int(port)), keys=KeyCache(KeyStore(target))))
"""


def start_gateways(
    database: str, count: int, workdir: Path
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """The fake engine and ``count`` gateway processes in front of it, sharing ``database``."""
    procs: list[subprocess.Popen[bytes]] = []
    port = free_port()
    engine = subprocess.Popen(
        [sys.executable, "-m", "airlock.testing.fake_engine", "--port", str(port), "--model", "tiny"]
    )
    procs.append(engine)
    engine_url = f"http://127.0.0.1:{port}"
    wait_healthy(engine_url, engine, what="the fake engine")
    urls = []
    for i in range(count):
        port = free_port()
        logs = workdir / f"logs{i}"
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, database, engine_url, str(port), str(logs)])
        procs.append(proc)
        urls.append(f"http://127.0.0.1:{port}")
        wait_healthy(urls[-1], proc, what=f"gateway {i}")
    return procs, urls


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
