"""What the stream send timeout costs per streamed write: a no-op ``send`` awaited bare, through
``asyncio.timeout`` around each write (the first version), and through ``BoundedSend`` (one
re-arming timer per stream, what the gateway uses). Prints microseconds per write.

    python benchmarks/stream_send.py [--writes 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from airlock.gateway.asgi import BoundedSend

MESSAGE = {"type": "http.response.body", "body": b"data: x\n\n", "more_body": True}


async def _noop(message: Any) -> None:
    return None


async def _with_timeout(message: Any) -> None:
    async with asyncio.timeout(30.0):
        await _noop(message)


async def _per_write(send: Callable[[Any], Awaitable[None]], writes: int) -> float:
    began = time.perf_counter()
    for _ in range(writes):
        await send(MESSAGE)
    return (time.perf_counter() - began) / writes * 1e6


async def main(writes: int) -> None:
    bounded = BoundedSend(_noop, 30.0, None)
    try:
        for name, send in (("bare", _noop), ("asyncio.timeout", _with_timeout), ("BoundedSend", bounded)):
            print(f"{name:16} {await _per_write(send, writes):6.2f} us per write")
    finally:
        bounded.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200_000)
    uvloop.run(main(parser.parse_args().writes))
