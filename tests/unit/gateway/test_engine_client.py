"""The gateway's engine client against raw loopback servers that answer well, slowly, or badly."""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from airlock.gateway.engine_client import (
    HIGH_WATER,
    EngineBrokeOff,
    EngineClient,
    EngineDisconnected,
    EngineTimeout,
    EngineUnreachable,
    parse_target,
)


def sync(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on 127.0.0.1; yields its URL and the number of connections it accepted so far."""
    accepted = [0]

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield f"http://127.0.0.1:{port}/v1/chat/completions", accepted


def answer(body: bytes, *, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
        % (
            len(body),
            extra,
        )
        + body
    )


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head, body = await read_request(reader)
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        writer.write(answer(b'{"echo": ' + body + b"}"))
        await writer.drain()


def test_target_parsing() -> None:
    t = parse_target("https://engine.internal/v1/completions?x=1")
    assert (t.host, t.port, t.tls, t.path, t.host_header) == (
        "engine.internal",
        443,
        True,
        "/v1/completions?x=1",
        "engine.internal",
    )
    t = parse_target("http://[::1]:8080/v1")
    assert (t.host, t.port, t.host_header) == ("::1", 8080, "[::1]:8080")


@sync
async def test_requests_reuse_one_keep_alive_connection() -> None:
    async with server(keep_alive) as (url, accepted):
        client = EngineClient()
        for i in range(5):
            async with await client.post(url, b'{"n": %d}' % i, {"Content-Type": "application/json"}) as resp:
                assert resp.status == 200 and resp.headers["content-type"] == "application/json"
                assert await resp.read() == b'{"echo": {"n": %d}}' % i
        assert accepted[0] == 1 and client.idle_connections() == 1
        await client.close()


@sync
async def test_a_connection_the_engine_closed_is_retried_once_on_a_fresh_one() -> None:
    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))  # keep-alive by HTTP/1.1, but the server closes after one (llama-server)
        await writer.drain()

    async with server(one_then_close) as (url, accepted):
        client = EngineClient()
        for _ in range(3):
            async with await client.post(url, b"{}", {}) as resp:
                assert await resp.read() == b"{}"
        assert accepted[0] == 3
        await client.close()


@sync
async def test_a_request_the_engine_read_and_dropped_is_not_sent_again() -> None:
    async def read_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with server(read_and_close) as (url, accepted):
        client = EngineClient()
        with pytest.raises(EngineDisconnected):
            await client.post(url, b"{}", {})
        assert accepted[0] == 1  # a fresh connection: not retried
        await client.close()


@sync
async def test_chunked_stream_comes_as_it_is_sent_and_ends() -> None:
    release = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(b"7\r\ndata: 1\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)

    async with server(chunked) as (url, _):
        client = EngineClient()
        resp = await client.post(url, b"{}", {})
        got = []
        async with resp:
            while (chunk := await resp.chunk()) is not None:
                got.append(chunk)
                release.set()
        assert got == [b"data: 1", b"data: 2"]
        assert client.idle_connections() == 1  # read to its end: kept
        await client.close()


@sync
async def test_dying_mid_body_is_an_error_and_a_partial_answer_is_not_pooled() -> None:
    async def dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
        await writer.drain()

    async with server(dies) as (url, _):
        client = EngineClient()
        resp = await client.post(url, b"{}", {})
        async with resp:
            with pytest.raises(EngineBrokeOff, match="mid-answer"):
                await resp.read()
        assert client.idle_connections() == 0
        await client.close()


@sync
async def test_an_answer_left_unread_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def streams(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        assert await reader.read() == b""  # the client closed: an engine stops generating here
        closed.set()

    async with server(streams) as (url, _):
        client = EngineClient()
        async with await client.post(url, b"{}", {}) as resp:
            assert await resp.chunk() == b"hello"
        await asyncio.wait_for(closed.wait(), 5)
        assert client.idle_connections() == 0
        await client.close()


@sync
async def test_a_slow_reader_pauses_the_engine_socket() -> None:
    total = 8 * HIGH_WATER
    sent = asyncio.Event()

    async def floods(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        writer.write(b"x" * total)
        await writer.drain()
        sent.set()
        await asyncio.sleep(1)

    async with server(floods) as (url, _):
        client = EngineClient()
        async with await client.post(url, b"{}", {}) as resp:
            await asyncio.sleep(0.3)  # not reading: the buffer stops near the high-water mark
            conn = resp._conn
            assert conn.paused and conn.buffered < 2 * HIGH_WATER + 65536
            assert len(await resp.read()) == total
        await client.close()


@sync
async def test_silence_past_the_read_timeout_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(2)

    async with server(silent) as (url, _):
        client = EngineClient(read_timeout_s=0.2)
        with pytest.raises(EngineTimeout):
            await client.post(url, b"{}", {})
        await client.close()


@sync
async def test_nothing_listening_is_unreachable() -> None:
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    client = EngineClient()
    with pytest.raises(EngineUnreachable, match=f"127.0.0.1:{port}"):
        await client.post(f"http://127.0.0.1:{port}/v1/completions", b"{}", {})
    await client.close()


@sync
async def test_malformed_http_and_header_injection_are_refused() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)

    async with server(garbage) as (url, _):
        client = EngineClient()
        with pytest.raises(EngineBrokeOff, match="malformed"):
            await client.post(url, b"{}", {})
        with pytest.raises(Exception, match="line break"):
            await client.post(url, b"{}", {"X-Request-Id": "a\r\nX-Evil: 1"})
        await client.close()


@sync
async def test_a_close_delimited_body_ends_with_the_connection() -> None:
    async def old_style(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    async with server(old_style) as (url, _):
        client = EngineClient()
        async with await client.post(url, b"{}", {}) as resp:
            assert await resp.read() == b"all of it"
        assert client.idle_connections() == 0
        await client.close()


@sync
async def test_one_connection_carries_chunked_and_sized_answers_in_turn() -> None:
    async def alternating(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        while True:
            await read_request(reader)
            n += 1
            if n % 2:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab%d\r\n0\r\n\r\n" % (n % 10)
                )
            else:
                writer.write(answer(b"sized%d" % n))
            await writer.drain()

    async with server(alternating) as (url, accepted):
        client = EngineClient()
        got = []
        for _ in range(6):
            async with await client.post(url, b"{}", {}) as resp:
                got.append(await resp.read())
        assert got == [b"ab1", b"sized2", b"ab3", b"sized4", b"ab5", b"sized6"]
        assert accepted[0] == 1
        await client.close()


@sync
async def test_endless_headers_are_cut_off() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(100_000):
            writer.write(b"X-Filler-%d: %s\r\n" % (i, b"y" * 64))
            await writer.drain()

    async with server(endless) as (url, _):
        client = EngineClient()
        with pytest.raises(EngineBrokeOff, match="headers passed"):
            await client.post(url, b"{}", {})
        await client.close()


@sync
async def test_a_connection_the_engine_spoke_on_while_idle_is_not_reused() -> None:
    async def says_408_when_idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")  # and keeps it open
        await writer.drain()
        await asyncio.sleep(5)

    async with server(says_408_when_idle) as (url, accepted):
        client = EngineClient()
        async with await client.post(url, b"{}", {}) as resp:
            assert await resp.read() == b"{}"
        await asyncio.sleep(0.3)
        async with await asyncio.wait_for(client.post(url, b"{}", {}), 3) as resp:
            assert resp.status == 200 and await resp.read() == b"{}"
        assert accepted[0] == 2  # a fresh connection, not the 408 read as the answer
        await client.close()


@sync
async def test_an_answer_left_with_a_paused_socket_is_not_pooled() -> None:
    total = HIGH_WATER + 1000  # just past the mark: it all arrives, and reading is paused

    first = [True]

    async def big_then_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if first[0]:  # the first connection's first answer is big
            first[0] = False
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total + b"x" * total)
            await writer.drain()
        await keep_alive(reader, writer)  # the connection itself stays usable for the engine

    async with server(big_then_echo) as (url, accepted):
        client = EngineClient(read_timeout_s=2)
        async with await client.post(url, b"{}", {}) as resp:
            await asyncio.sleep(0.2)
            assert resp._conn.paused and resp._conn.complete and resp._conn.chunks
            # the client went away here, nothing read
        assert client.idle_connections() == 0
        async with await client.post(url, b'"next"', {}) as resp:
            assert await resp.read() == b'{"echo": "next"}'
        assert accepted[0] == 2
        await client.close()


@sync
async def test_a_request_the_engine_worked_on_before_dropping_it_is_not_sent_twice() -> None:
    bodies: list[bytes] = []

    async def drops_the_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        bodies.append(body)
        writer.write(answer(b"{}"))
        await writer.drain()
        _, body = await read_request(reader)
        bodies.append(body)
        await asyncio.sleep(0.5)  # works on it, then dies

    async with server(drops_the_second) as (url, _):
        client = EngineClient()
        async with await client.post(url, b"first", {}) as resp:
            await resp.read()
        with pytest.raises(EngineDisconnected):
            await client.post(url, b"second", {})
        await asyncio.sleep(0.2)
        assert bodies == [b"first", b"second"]
        await client.close()


@sync
async def test_bytes_past_the_answer_are_not_read_into_it_and_spoil_the_connection() -> None:
    async def two_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        bad = b"HTTP/1.1 500 Oops\r\nX-Extra: 1\r\nContent-Length: 2\r\n\r\nB2"
        writer.write(answer(b"A1") + bad)
        await writer.drain()
        await asyncio.sleep(1)

    async with server(two_answers) as (url, _):
        client = EngineClient()
        async with await client.post(url, b"{}", {}) as resp:
            assert (resp.status, await resp.read()) == (200, b"A1")
            assert "x-extra" not in resp.headers
        assert client.idle_connections() == 0
        await client.close()


@sync
async def test_an_informational_answer_is_skipped_and_a_reset_is_not_a_whole_body() -> None:
    async def hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + answer(b"real"))
        await writer.drain()
        await keep_alive(reader, writer)

    async with server(hints) as (url, _):
        client = EngineClient()
        async with await client.post(url, b"{}", {}) as resp:
            assert (resp.status, await resp.read()) == (200, b"real")
            assert "link" not in resp.headers
        await client.close()

    async def resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"partial": ')
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST

    async with server(resets) as (url, _):
        client = EngineClient()
        async with await client.post(url, b"{}", {}) as resp:
            with pytest.raises(EngineBrokeOff):
                await resp.read()
        await client.close()
