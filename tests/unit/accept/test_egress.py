"""The egress witnesses' parsing: packets, /proc/net tables, and the check's summary."""

from __future__ import annotations

import socket
import struct

import pytest

from airlock.accept.check import egress_summary
from airlock.accept.egress import EgressEvent, Witness, interface_names, parse_frame
from airlock.accept.procnet import Process, is_outside, parse_table

ETH = b"\x02" * 12


def _ipv4(proto: int, dest: str, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                         socket.inet_aton("10.255.255.1"), socket.inet_aton(dest))  # fmt: skip
    return ETH + b"\x08\x00" + header + payload


def _ipv6(proto: int, dest: str, payload: bytes) -> bytes:
    header = struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, 64,
                         socket.inet_pton(socket.AF_INET6, "fdff:ffff::1"), socket.inet_pton(socket.AF_INET6, dest))  # fmt: skip
    return ETH + b"\x86\xdd" + header + payload


def test_frames_give_protocol_destination_and_ports() -> None:
    ports = struct.pack("!HH", 41000, 443) + b"\0" * 16
    assert parse_frame(_ipv4(6, "203.0.113.5", ports)) == ("tcp", "203.0.113.5", 443, 41000)
    assert parse_frame(_ipv4(17, "198.51.100.7", struct.pack("!HH", 5353, 53))) == (
        "udp",
        "198.51.100.7",
        53,
        5353,
    )
    assert parse_frame(_ipv4(1, "192.0.2.1", b"\x08\0\0\0")) == ("icmp", "192.0.2.1", 0, 0)
    assert parse_frame(_ipv6(6, "2001:db8::5", ports)) == ("tcp", "2001:db8::5", 443, 41000)
    assert parse_frame(_ipv6(58, "ff02::2", b"\x85\0\0\0")) is None  # the kernel's router solicitation
    assert parse_frame(ETH + b"\x08\x06" + b"\0" * 28) is None  # ARP
    assert parse_frame(b"short") is None


TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
   1: 01FFFF0A:A30C 057100CB:01BB 02 00000001:00000000 01:00000046 00000000     0        0 222 2 0 100 0 0 10 -1
"""
TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: FFFFFFFD000000000000000001000000:D7A0 B80D0120000000000000000005000000:01BB 02 00000001:00000000 01:00000045 00000000     0        0 333 2 0 100 0 0 10 -1
"""


def test_proc_net_tables_parse() -> None:
    listen, syn = parse_table(TCP, "tcp")
    assert listen.local == ("127.0.0.1", 8080) and listen.remote == ("0.0.0.0", 0) and listen.inode == 111
    assert syn.remote == ("203.0.113.5", 443) and syn.state == 2 and syn.inode == 222
    (six,) = parse_table(TCP6, "tcp")
    assert six.local == ("fdff:ffff::1", 55200) and six.remote == ("2001:db8::5", 443)


@pytest.mark.parametrize(
    ("host", "outside"),
    [("127.0.0.1", False), ("::1", False), ("0.0.0.0", False), ("::", False), ("::ffff:127.0.0.1", False),
     ("203.0.113.5", True), ("10.1.2.3", True), ("2001:db8::5", True)],
)  # fmt: skip
def test_outside_means_beyond_loopback(host: str, outside: bool) -> None:
    assert is_outside(host) is outside


def test_interface_names_from_proc_net_dev() -> None:
    dev = "Inter-|   Receive\n face |bytes\n    lo: 0 0\nal-out: 1 2\n"
    assert interface_names(dev) == ["al-out", "lo"]


def test_witness_dedupes_and_summary_names_process_and_destination() -> None:
    ticks = iter([0.0, 1.0, 2.0, 3.0, 4.0])
    witness = Witness(clock=lambda: next(ticks))
    phone = Process(pid=42, command="python -c ... phone-home")
    witness.add("packet", "tcp", "203.0.113.5:443", phone)
    witness.add("packet", "tcp", "203.0.113.5:443", phone)
    witness.add("connect", "tcp", "203.0.113.5:443", phone)
    witness.add("dns", "dns", "huggingface.co (A)", phone)
    assert [e.kind for e in witness.events] == ["packet", "connect", "dns"]
    assert witness.events[0].at_s == 1.0
    events = [*witness.events, EgressEvent(kind="packet", proto="udp", destination="198.51.100.7:53")]
    summary = egress_summary(events)
    assert summary == (
        "2 processes tried to reach the outside: pid 42 (python -c ... phone-home): "
        "looked up huggingface.co; reached 203.0.113.5:443 (tcp) | an unknown process: reached 198.51.100.7:53 (udp)"
    )
