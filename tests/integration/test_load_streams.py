"""1,000 concurrent streams through a gateway process in front of the fake engine: every stream
complete; the gateway's resident memory bounded at the peak and flat from one 1,000 to the next; no
descriptor left behind; 50 clients that read slowly not holding back the other 950.

The gateway (``serve_engines``, keys on, engine_concurrency above 1,000) and the fake engine run in
processes of their own, with RLIMIT_NOFILE raised (the gateway holds two descriptors per stream);
this process is the client (aiohttp, one event loop). A thread samples the gateway's VmRSS, open
descriptors and TCP connections (from clients, to the engine) every 0.5 s; the figures and the curve
are printed (``pytest -s``) and written as JSON to ``$AIRLOCK_LOAD_FIGURES`` when it is set.

The first 1,000 streams set a high-water mark that the allocators keep (37 KB a stream when this
was written) and leave 1,000 idle engine connections in the gateway's pool (60 s keep-alive):
"flat" is measured from the level they leave. The slow clients read 128 bytes every 0.5 s through
a small receive buffer; a 15-token stream is about 3 KB, so what they have not read waits in the kernel's socket buffers, not
in the gateway. Speed is compared only within one run, as a loose ratio between the run with slow
clients and the run without.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import pytest

from airlock.engines.base import free_port
from airlock.gateway.apikeys import KeyStore
from airlock.spec import GatewaySpec
from airlock.testing.fake_engine import REPLY
from gateway_procs import stop
from harness import wait_healthy

pytestmark = pytest.mark.integration

STREAMS = 1000
SLOW = 50
TOKENS = len(REPLY.split())  # the fake engine's whole reply: a chunk per word, a finish chunk, [DONE]
CHUNKS = TOKENS + 1
TOKEN_DELAY = 0.2  # the engine's seconds per token: every stream lasts >= 3 s, so all 1,000 overlap
SLOW_PAUSE = 0.5  # a slow client's pause between reads of at most SLOW_READ bytes
SLOW_READ = 128
#: descriptors the test's processes need: the gateway holds 2 per stream (client and engine side)
NOFILE = 3 * STREAMS + 1024

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

spec, db, engine, port, logs = sys.argv[1:6]
config = EngineConfig(name="tiny", kind="remote", base_url=engine, upstream_model="tiny", launch=None)
supervisor = Supervisor([config], log_dir=Path(logs))
uvloop.run(serve_engines(supervisor, GatewaySpec.model_validate_json(spec), bind("127.0.0.1", int(port)),
                         keys=KeyCache(KeyStore(Path(db)))))
"""


@dataclass(frozen=True)
class Point:
    t_s: float
    rss_kb: int
    fds: int
    clients: int  # of those fds: connections from clients
    engine: int  # connections to the engine (idle ones stay pooled: 60 s keep-alive, gone within ~2 min)


@dataclass
class Stream:
    slow: bool
    status: int = 0
    chunks: int = 0
    done: bool = False
    started: float = 0.0
    events: list[float] = field(default_factory=list)  # when each data line arrived

    @property
    def finish_s(self) -> float:
        return self.events[-1] - self.started if self.events else float("inf")

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.events, self.events[1:], strict=False)]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def connections(pid: int, own_port: int, engine_port: int) -> tuple[int, int]:
    """The process's TCP connections accepted on ``own_port`` and those it opened to ``engine_port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    clients: set[str] = set()  # by inode: a table read in chunks while it changes can repeat a row
    engine: set[str] = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] not in inodes or cols[3] == "0A":  # 0A: listening
                continue
            if int(cols[1].rsplit(":", 1)[1], 16) == own_port:
                clients.add(cols[9])
            if int(cols[2].rsplit(":", 1)[1], 16) == engine_port:
                engine.add(cols[9])
    return len(clients), len(engine)


class Sampler:
    """The gateway's RSS and open descriptors every ``every`` seconds, in a thread."""

    def __init__(self, stack: Stack, every: float = 0.5) -> None:
        self.stack, self.pid, self.every = stack, stack.pid, every
        self.points: list[Point] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> Point:
        clients, engine = connections(self.pid, self.stack.port, self.stack.engine_port)
        point = Point(round(time.monotonic() - self.t0, 2), rss_kb(self.pid), fds(self.pid), clients, engine)
        self.points.append(point)
        return point

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> Point:
        return max((p for p in self.points if start <= p.t_s <= end), key=lambda p: p.rss_kb)


def raise_nofile(wanted: int) -> None:
    """Raise this process's descriptor limit (the children inherit it); skip if it cannot go so high."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        pytest.skip(f"RLIMIT_NOFILE {soft}/{hard}: {wanted} descriptors are needed for {STREAMS} streams")


@dataclass(frozen=True)
class Stack:
    url: str
    token: str
    pid: int
    port: int
    engine_port: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    raise_nofile(NOFILE)
    work = tmp_path_factory.mktemp("load")
    port = free_port()
    engine = subprocess.Popen(
        [sys.executable, "-m", "airlock.testing.fake_engine", "--port", str(port), "--model", "tiny",
         "--token-delay", str(TOKEN_DELAY)],
    )  # fmt: skip
    procs = [engine]
    try:
        engine_url = f"http://127.0.0.1:{port}"
        wait_healthy(engine_url, engine, what="the fake engine")
        store = KeyStore(work / "keys.db")
        _, token = store.create("load")
        # every stream in flight at once at the engine, none waiting in the gateway's queue
        spec = GatewaySpec(engine_concurrency=STREAMS + 100, engine_queue=100)
        gport = free_port()
        gateway = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, spec.model_dump_json(), str(work / "keys.db"), engine_url,
             str(gport), str(work / "logs")],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )  # fmt: skip
        procs.append(gateway)
        url = f"http://127.0.0.1:{gport}"
        wait_healthy(url, gateway, what="the gateway")
        yield Stack(url, token, gateway.pid, gport, port)
    finally:
        stop(procs)


def slow_socket() -> socket.socket:
    """A client socket with the smallest receive buffer: what it has not read stays at the gateway."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    return sock


async def one(session: aiohttp.ClientSession, url: str, token: str, stream: Stream) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": TOKENS,
        "stream": True,
    }
    stream.started = time.monotonic()
    async with session.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        stream.status = resp.status
        if stream.slow:
            pending = b""
            while chunk := await resp.content.read(SLOW_READ):
                pending += chunk
                while b"\n\n" in pending:
                    event, pending = pending.split(b"\n\n", 1)
                    note(stream, event)
                await asyncio.sleep(SLOW_PAUSE)
        else:
            async for line in resp.content:
                note(stream, line.strip())


def note(stream: Stream, line: bytes) -> None:
    if not line.startswith(b"data: "):
        return
    stream.events.append(time.monotonic())
    if line == b"data: [DONE]":
        stream.done = True
    else:
        assert not stream.done, "a chunk after [DONE]"
        stream.chunks += 1


async def run_streams(url: str, token: str, n: int, slow: int) -> list[Stream]:
    """``n`` streams at once; the first ``slow`` of them read slowly, on their own small-buffer sockets."""
    streams = [Stream(slow=i < slow) for i in range(n)]
    timeout = aiohttp.ClientTimeout(total=300)
    fast_conn = aiohttp.TCPConnector(limit=0, force_close=True)
    slow_conn = aiohttp.TCPConnector(limit=0, force_close=True, socket_factory=lambda _addr: slow_socket())
    async with (
        aiohttp.ClientSession(connector=fast_conn, timeout=timeout) as fast,
        aiohttp.ClientSession(connector=slow_conn, timeout=timeout, read_bufsize=SLOW_READ) as slow_session,
    ):
        await asyncio.gather(*(one(slow_session if s.slow else fast, url, token, s) for s in streams))
    return streams


def settle(sampler: Sampler, timeout_s: float = 30.0) -> Point:
    """Wait until the gateway has closed every client connection, then sample (a bound on a wait,
    not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while sampler.sample().clients and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    return sampler.sample()


def check_complete(streams: list[Stream]) -> None:
    bad = [s for s in streams if s.status != 200 or not s.done or s.chunks != CHUNKS]
    assert not bad, (
        f"{len(bad)} of {len(streams)} streams incomplete, e.g. status {bad[0].status}, "
        f"{bad[0].chunks} chunks, [DONE] {bad[0].done}"
    )


def summary(streams: list[Stream]) -> dict[str, float]:
    finish = sorted(s.finish_s for s in streams)
    gaps = sorted(g for s in streams for g in s.gaps)
    return {
        "streams": len(streams),
        "finish_p50_s": statistics.median(finish),
        "finish_p90_s": finish[int(0.9 * len(finish)) - 1],
        "finish_max_s": finish[-1],
        "gap_p50_s": statistics.median(gaps),
        "gap_p99_s": gaps[int(0.99 * len(gaps)) - 1],
    }


def run(sampler: Sampler, stack: Stack, slow: int) -> tuple[list[Stream], Point, Point]:
    """1,000 streams: their records, the gateway's highest RSS while they ran, and its level after."""
    start = sampler.sample().t_s
    streams = asyncio.run(run_streams(stack.url, stack.token, STREAMS, slow))
    end = sampler.sample().t_s
    check_complete(streams)
    return streams, sampler.peak_between(start, end), settle(sampler)


def test_thousand_streams_memory_bounded_and_flat_slow_clients_hold_back_no_one(stack: Stack) -> None:
    sampler = Sampler(stack)
    try:
        check_complete(asyncio.run(run_streams(stack.url, stack.token, 100, 0)))  # imports, caches
        time.sleep(1.0)
        cold = sampler.sample()
        # the first 1,000 set the high-water mark that CPython's and glibc's allocators then keep,
        # and leave 1,000 idle connections in the gateway's pool to the engine (60 s keep-alive)
        _, first_peak, before = run(sampler, stack, 0)
        plain, peak, after_plain = run(sampler, stack, 0)
        mixed, peak_slow, after = run(sampler, stack, SLOW)
    finally:
        sampler.stop()

    fast_alone = summary(plain[SLOW:])  # the same 950 positions, so both sides count alike
    fast_beside_slow = summary([s for s in mixed if not s.slow])
    slow = summary([s for s in mixed if s.slow])
    most_clients = max(p.clients for p in sampler.points)
    figures = {
        "cold": asdict(cold),
        "first_peak": asdict(first_peak),
        "before": asdict(before),
        "peak": asdict(peak),
        "after_plain": asdict(after_plain),
        "peak_with_slow_clients": asdict(peak_slow),
        "after": asdict(after),
        "first_peak_per_stream_kb": (first_peak.rss_kb - cold.rss_kb) / STREAMS,
        "most_clients_at_once": most_clients,
        "fast_alone": fast_alone,
        "fast_beside_slow": fast_beside_slow,
        "slow": slow,
        "curve": [asdict(p) for p in sampler.points],
    }
    print(json.dumps({k: v for k, v in figures.items() if k != "curve"}, indent=2))
    print(
        "t_s:rss_kb:fds:clients:engine",
        " ".join(f"{p.t_s}:{p.rss_kb}:{p.fds}:{p.clients}:{p.engine}" for p in sampler.points),
    )
    if out := os.environ.get("AIRLOCK_LOAD_FIGURES"):
        Path(out).write_text(json.dumps(figures, indent=2))

    # the gateway held (nearly) every stream at once, each with a client and an engine connection
    assert most_clients >= 0.9 * STREAMS
    assert max(p.engine for p in sampler.points) >= 0.9 * STREAMS
    # bounded: the highest RSS, over the level before any stream, well under 100 KB per stream
    for top in (first_peak, peak, peak_slow):
        assert top.rss_kb - cold.rss_kb < STREAMS * 100, f"peak {top.rss_kb} KB, cold {cold.rss_kb} KB"
    # flat: each later 1,000 streams (with and without slow clients) leave memory within 4 MiB
    # (4 KB a stream) of where the first 1,000 left it, and no descriptor behind
    for later in (after_plain, after):
        assert later.rss_kb - before.rss_kb < 4 * 1024, f"{before.rss_kb} KB before, {later.rss_kb} KB after"
        assert later.clients == 0
        assert later.fds <= before.fds + 2, f"{before.fds} fds before, {later.fds} after"
    # every other stream had ended before half the slow clients had read theirs: not held back by them
    assert fast_beside_slow["finish_max_s"] < slow["finish_p50_s"]
    # and against the run without slow clients, a loose ratio (two runs on a shared machine differ
    # by up to 1.6x in finish time on their own; the gap between tokens is the engine's pace)
    assert fast_beside_slow["finish_p90_s"] < 3.0 * fast_alone["finish_p90_s"]
    assert fast_beside_slow["gap_p50_s"] < 2.0 * fast_alone["gap_p50_s"]
