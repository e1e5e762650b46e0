"""The corked transport: a response's head goes out with its first body bytes, never later than the
end of the event loop's turn, and closing never loses it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from airlock.serving.corked import CorkedTransport


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = self.eof = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.writes.append(b"<paused>")


def corked() -> tuple[CorkedTransport, Recorder]:
    inner = Recorder()
    return CorkedTransport(cast(asyncio.Transport, inner), asyncio.get_running_loop()), inner


def test_head_and_body_in_one_write_and_a_lone_head_by_the_end_of_the_turn() -> None:
    async def main() -> None:
        t, inner = corked()
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert inner.writes == [] and t.get_write_buffer_size() > 0
        t.write(b"{}")
        assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")  # a stream's head, alone
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert inner.writes[-1] == b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        t.write(b"5\r\nhello\r\n")  # body writes pass straight through
        assert inner.writes[-1] == b"5\r\nhello\r\n" and len(inner.writes) == 3
        t.pause_reading()  # everything else is the inner transport's
        assert inner.writes[-1] == b"<paused>" and t.get_extra_info("peername") == ("127.0.0.1", 1)

    asyncio.run(main())


def test_close_and_eof_write_a_held_head_first_and_abort_drops_it() -> None:
    async def main() -> None:
        t, inner = corked()
        t.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
        t.close()
        assert inner.writes == [b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n"] and inner.closed
        t, inner = corked()
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write_eof()
        assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\n"] and inner.eof
        t, inner = corked()
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.abort()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert inner.writes == [] and inner.aborted

    asyncio.run(main())
