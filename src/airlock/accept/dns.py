"""A resolver on loopback that answers no one: every query is logged (name, type, the asking
process) and refused (RCODE 5), so that a name lookup inside the acceptance namespace is recorded
instead of reaching a real resolver. Only the header and the question are read (RFC 1035 4.1)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from airlock.accept.procnet import Process

REFUSED = 5
_TYPES = {1: "A", 28: "AAAA", 5: "CNAME", 12: "PTR", 15: "MX", 16: "TXT", 33: "SRV", 65: "HTTPS", 64: "SVCB"}


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str
    qtype: int
    question: bytes  # the question section as sent, echoed in the answer

    @property
    def type_name(self) -> str:
        return _TYPES.get(self.qtype, str(self.qtype))


def parse_query(data: bytes) -> Query | None:
    """The first question of a DNS query, or None when ``data`` is not one."""
    if len(data) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000 or qdcount < 1:  # a response, or no question
        return None
    labels: list[str] = []
    at = 12
    while True:
        if at >= len(data):
            return None
        length = data[at]
        at += 1
        if length == 0:
            break
        if length & 0xC0 or at + length > len(data):  # no compression in a question we accept
            return None
        labels.append(data[at : at + length].decode("ascii", errors="replace"))
        at += length
    if at + 4 > len(data):
        return None
    qtype = struct.unpack("!H", data[at : at + 2])[0]
    return Query(id=ident, flags=flags, name=".".join(labels) or ".", qtype=qtype, question=data[12 : at + 4])


def refusal(query: Query) -> bytes:
    """A REFUSED answer to ``query``: its id, opcode and RD bit, its question, no records."""
    flags = 0x8000 | (query.flags & 0x7900) | REFUSED  # QR, the opcode and RD copied
    return struct.pack("!HHHHHH", query.id, flags, 1, 0, 0, 0) + query.question


@dataclass(frozen=True)
class Lookup:
    name: str
    qtype: str
    client: tuple[str, int]
    process: Process | None


class RefusingResolver:
    """A UDP resolver on ``host:port`` (port 0: a free one) that logs and refuses every query.

    ``who(port)`` names the process whose UDP socket asked (looked up while it waits for the answer);
    ``on_lookup`` hears of each query as it comes.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 53,
        *,
        who: Callable[[int], Process | None] | None = None,
        on_lookup: Callable[[Lookup], None] | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.lookups: list[Lookup] = []
        self._who = who
        self._on_lookup = on_lookup
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="accept-dns", daemon=True)

    def __enter__(self) -> RefusingResolver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = parse_query(data)
            if query is None:
                continue
            process = self._who(client[1]) if self._who is not None else None
            found = Lookup(query.name, query.type_name, (client[0], client[1]), process)
            self.lookups.append(found)
            if self._on_lookup is not None:
                self._on_lookup(found)
            try:
                self.sock.sendto(refusal(query), client)
            except OSError:
                continue
