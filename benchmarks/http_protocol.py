"""What the guards of airlock.serving.protocol (header timeout, header size, connection cap) cost per
request: uvicorn's HttpToolsProtocol against GuardedHttpProtocol, on the same requests.

The protocols are driven directly on a uvloop loop through an in-memory transport (no sockets, no
kernel), with a trivial ASGI app, so that what is measured is the protocol's own work plus the task
uvicorn starts per request; the two classes alternate in short rounds and the fastest round of each is
kept (the one least disturbed by other work on the machine), the medians beside it.
Two cases: requests on one kept-alive connection, and one connection per request (opened, one
request, closed).

    python benchmarks/http_protocol.py [--requests 3000] [--rounds 40]

Prints µs per request for each and the difference; writes JSON (default
benchmarks/results/http_protocol.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: python-httpx/0.28\r\n"
    b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
    b"Authorization: Bearer sk-airlock-0123456789abcdef0123456789abcdef\r\n"
    b"Content-Type: application/json\r\nContent-Length: 17\r\n\r\n"
    b'{"model": "tiny"}'
)


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


async def run(cls: type[asyncio.Protocol], requests: int, per_connection: bool) -> float:
    import uvicorn
    from uvicorn.server import ServerState

    config = uvicorn.Config(app, http=cls, loop="none", lifespan="off", log_level="warning", access_log=False)
    config.load()
    state = ServerState()

    def connect() -> tuple[Any, MemoryTransport]:
        protocol: Any = cls(config=config, server_state=state, app_state={})  # type: ignore[call-arg]
        transport = MemoryTransport()
        protocol.connection_made(transport)
        return protocol, transport

    protocol, transport = connect()
    started = time.perf_counter()
    for _ in range(requests):
        if per_connection:
            protocol, transport = connect()
        protocol.data_received(REQUEST)
        while state.tasks:  # noqa: ASYNC110 (the request's task: a few steps of the loop)
            await asyncio.sleep(0)
        if per_connection:
            transport.closing = True
            protocol.connection_lost(None)
    elapsed = time.perf_counter() - started
    protocol.connection_lost(None)
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="per round")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "http_protocol.json")
    args = parser.parse_args()

    import uvloop
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from airlock.serving.protocol import ConnectionLimits, guarded_protocol

    guarded = guarded_protocol(
        ConnectionLimits(header_timeout_s=10, max_header_bytes=32768, max_connections=4096)
    )
    classes: dict[str, type[asyncio.Protocol]] = {"uvicorn": HttpToolsProtocol, "guarded": guarded}
    results: dict[str, dict[str, float]] = {}
    for case, per_connection in (("keep-alive", False), ("connection per request", True)):
        rounds: dict[str, list[float]] = {name: [] for name in classes}
        for i in range(args.rounds):  # alternating, in both orders, so that both see the same neighbours
            for name, cls in sorted(classes.items(), reverse=bool(i % 2)):
                rounds[name].append(uvloop.run(run(cls, args.requests, per_connection)))
        # the fastest round of each: the least disturbed by whatever else this machine runs
        best = {name: min(values) for name, values in rounds.items()}
        medians = {name: statistics.median(values) for name, values in rounds.items()}
        diff = best["guarded"] - best["uvicorn"]
        results[case] = {f"{n}_best_us": v for n, v in best.items()} | {
            f"{n}_median_us": v for n, v in medians.items()
        }
        results[case]["difference_best_us"] = diff
        print(
            f"{case:24} best of {args.rounds}: uvicorn {best['uvicorn']:6.2f} µs/request, guarded "
            f"{best['guarded']:6.2f}, difference {diff:+.2f} µs ({diff / best['uvicorn'] * 100:+.1f} %); "
            f"medians {medians['uvicorn']:.2f} / {medians['guarded']:.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"requests": args.requests, "rounds": args.rounds, "results": results}, indent=2)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
