"""What the fault tests (tests/unit/gateway/test_faults_*.py) share: a gateway process's open file
descriptors and resident memory, its /metrics read as numbers, its engine, and streams read to
their end."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway_procs import CHAT, chat
from serve_procs import GatewayProc, _cmdline


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def settled_fds(pid: int) -> int:
    """The open descriptors once closes in flight are done: two reads 0.5 s apart agree (bounded)."""
    last = open_fds(pid)
    for _ in range(40):
        time.sleep(0.5)
        now = open_fds(pid)
        if now == last:
            return now
        last = now
    return last


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the series ``name`` whose labels include ``labels`` (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def metrics(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=10).text


def engine_pid(gw: GatewayProc) -> int:
    (pid,) = [p for p in gw.children() if b"airlock.testing.fake_engine" in _cmdline(p)]
    return pid


def engine_url(gw: GatewayProc) -> str:
    argv = _cmdline(engine_pid(gw)).split(b"\0")
    return f"http://127.0.0.1:{int(argv[argv.index(b'--port') + 1])}"


@dataclass
class Streamed:
    """One streamed answer as the client saw it."""

    status: int
    events: list[bytes]  # each event's data, b"[DONE]" included

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == b"[DONE]"

    @property
    def error(self) -> dict[str, Any] | None:
        """The last event when it is an OpenAI error object (``{"error": {...}}``)."""
        if not self.events or self.events[-1] == b"[DONE]":
            return None
        data = orjson.loads(self.events[-1])
        return data if isinstance(data, dict) and "error" in data else None


async def stream(
    client: httpx.AsyncClient,
    url: str,
    content: str,
    max_tokens: int = 16,
    started: asyncio.Event | None = None,
) -> Streamed:
    """POST a streamed chat request and read it to its end; ``started`` is set at its first event."""
    body = chat(content, max_tokens=max_tokens, stream=True)
    async with client.stream("POST", url + CHAT, json=body) as r:
        events: list[bytes] = []
        buffer = b""
        async for chunk in r.aiter_bytes():
            buffer += chunk
            *complete, buffer = buffer.split(b"\n\n")
            events += [e.removeprefix(b"data: ") for e in complete if e.strip()]
            if events and started is not None:
                started.set()
        return Streamed(r.status_code, events)
