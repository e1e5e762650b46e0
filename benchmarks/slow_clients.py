"""Half-open connections against a real gateway process: how many it still holds after a while, how
many descriptors it uses, and what a normal client sees meanwhile.

The gateway (``serve_engines`` over airlock's fake engine, as tests/serve_procs.py starts it) listens on
127.0.0.1; this script opens ``--connections`` connections that each send half a request header and
then nothing, while a normal client sends a request on a new connection every 50 ms. Before
airlock.serving.protocol, 6,000 such connections were all still open after 6 s.

    python benchmarks/slow_clients.py [--connections 6000] [--header-timeout 5] [--wait 8]
                                      [--max-connections N] [--fd-limit N]

Prints the connections still open and the gateway's descriptors at points in time, and the normal
client's statuses and latency; writes JSON (default benchmarks/results/slow_clients.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def still_open(socks: list[socket.socket]) -> int:
    """Connections the gateway has neither closed nor answered (a 408 comes with a close)."""
    count = 0
    for sock in socks:
        try:
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=6000)
    parser.add_argument("--header-timeout", type=float, default=5.0)
    parser.add_argument("--wait", type=float, default=8.0, help="seconds to watch after the last connection")
    parser.add_argument("--max-connections", type=int, default=None)
    parser.add_argument("--fd-limit", type=int, default=None, help="RLIMIT_NOFILE for the gateway process")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "slow_clients.json")
    args = parser.parse_args()

    import httpx

    from airlock.engines.base import free_port
    from airlock.spec import GatewaySpec
    from serve_procs import LAUNCH, TESTS

    need = args.connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    gateway = GatewaySpec(
        auth=False, header_timeout_s=args.header_timeout, max_connections=args.max_connections
    )
    port = free_port()
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"airlock-slow-clients-{port}"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    limit = args.fd_limit

    def limit_fds() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    argv = [sys.executable, "-c", LAUNCH, gateway.model_dump_json(), "", str(port), str(logs)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=limit_fds)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("LISTENING "), f"the gateway did not start: {line!r}"
    url = line.split()[1]
    fds = Path(f"/proc/{proc.pid}/fd")

    stop = threading.Event()
    normal: list[tuple[float, int]] = []  # (seconds, status; 0: a transport error)

    def normal_client() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status = httpx.get(url + "/v1/models", timeout=30).status_code
            except httpx.TransportError:
                status = 0
            normal.append((time.perf_counter() - started, status))
            stop.wait(0.05)

    socks: list[socket.socket] = []
    timeline: list[dict[str, Any]] = []
    try:
        client = threading.Thread(target=normal_client)
        client.start()
        t0 = time.monotonic()
        for _ in range(args.connections):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(sock)
        opened = time.monotonic() - t0
        print(f"opened {len(socks)} half-open connections in {opened:.1f} s")
        for at in (0.0, 1.0, args.header_timeout / 2, args.header_timeout + 1, args.wait):
            delay = at - (time.monotonic() - t0 - opened)
            if delay > 0:
                time.sleep(delay)
            point = {
                "seconds_after_last": round(time.monotonic() - t0 - opened, 1),
                "still_open": still_open(socks),
                "gateway_fds": len(list(fds.iterdir())),
                "gateway_alive": proc.poll() is None,
            }
            timeline.append(point)
            print(
                f"  {point['seconds_after_last']:5.1f} s after the last: {point['still_open']:5} still open, "
                f"gateway {point['gateway_fds']} fds, alive {point['gateway_alive']}"
            )
    finally:
        stop.set()
        for sock in socks:
            sock.close()
        proc.terminate()
        proc.wait(60)
    statuses: dict[int, int] = {}
    for _, status in normal:
        statuses[status] = statuses.get(status, 0) + 1
    latencies = sorted(s for s, status in normal if status == 200)
    summary = {
        "connections": args.connections,
        "header_timeout_s": args.header_timeout,
        "max_connections": args.max_connections,
        "fd_limit": args.fd_limit,
        "open_seconds": round(opened, 1),
        "timeline": timeline,
        "normal_client": {
            "statuses": statuses,
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1) if latencies else None,
            "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        },
    }
    print(f"normal client: statuses {statuses}, latency {summary['normal_client']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
