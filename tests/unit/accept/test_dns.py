"""The refusing resolver: every query logged with the process that asked, and answered REFUSED."""

from __future__ import annotations

import os
import socket
import struct

from airlock.accept.dns import REFUSED, RefusingResolver, parse_query, refusal
from airlock.accept.procnet import owner_of_port


def _query(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", qtype, 1)


def test_parse_and_refuse() -> None:
    query = parse_query(_query("huggingface.co", 28))
    assert query is not None
    assert (query.name, query.type_name, query.id) == ("huggingface.co", "AAAA", 0x1234)
    answer = refusal(query)
    ident, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", answer[:12])
    assert ident == 0x1234 and flags & 0x8000 and flags & 0x0100 and flags & 0x000F == REFUSED
    assert (qd, an, ns, ar) == (1, 0, 0, 0)
    assert answer[12:] == _query("huggingface.co", 28)[12:]


def test_not_a_query_is_ignored() -> None:
    assert parse_query(b"\x00\x01") is None
    query = parse_query(_query("a.b"))
    assert query is not None
    assert parse_query(refusal(query)) is None  # an answer is not a query
    truncated = _query("example.org")[:-3]
    assert parse_query(truncated) is None
    pointer = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\0\1\0\1"
    assert parse_query(pointer) is None


def test_resolver_logs_the_asking_process_and_refuses() -> None:
    heard: list[str] = []
    with (
        RefusingResolver(
            "127.0.0.1",
            0,
            who=lambda port: owner_of_port("udp", port),
            on_lookup=lambda found: heard.append(found.name),
        ) as resolver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        client.settimeout(10)
        client.sendto(_query("huggingface.co", ident=7), ("127.0.0.1", resolver.port))
        answer, _ = client.recvfrom(512)
        port = client.getsockname()[1]
    assert struct.unpack("!H", answer[:2])[0] == 7
    assert struct.unpack("!H", answer[2:4])[0] & 0x000F == REFUSED
    assert heard == ["huggingface.co"]
    (lookup,) = resolver.lookups
    assert (lookup.name, lookup.qtype, lookup.client[1]) == ("huggingface.co", "A", port)
    assert lookup.process is not None and lookup.process.pid == os.getpid()
