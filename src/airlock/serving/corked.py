"""A response's head and its first body bytes in one system call (and one TCP segment).

uvicorn writes the status line and headers when the app sends ``http.response.start`` and the body
when it sends ``http.response.body``: two ``send`` system calls for every plain answer, and two TCP
segments the client reads apart. :class:`CorkedTransport` holds the head back until the next write
in the same turn of the event loop and writes both together; a head with nothing after it goes out
at the end of the turn (``call_soon``), so nothing waits longer than that. Closing or half-closing
the connection writes a held head first; aborting drops it with the connection.

Measured with ``benchmarks/gateway_overhead.py`` (the commit that added this file gives the figures).
"""

from __future__ import annotations

import asyncio
from typing import Any

#: How uvicorn's response heads begin (it speaks HTTP/1.1 only).
HEAD = b"HTTP/1.1 "


class CorkedTransport:
    """Wraps a server connection's transport; everything but writing passes through unchanged."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    @property
    def inner(self) -> asyncio.Transport:
        return self._transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
        elif isinstance(data, bytes) and data.startswith(HEAD):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:  # pause_reading, set_protocol, can_write_eof, ...
        return getattr(self._transport, name)
