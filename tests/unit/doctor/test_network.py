"""The way out, read from recorded routing tables, resolver files and the environment; the gateway's
port and --probe on this machine's loopback only."""

from __future__ import annotations

import socket

import pytest

from airlock.doctor.host import RealHost
from airlock.doctor.network import (
    check_port,
    check_probes,
    check_proxies,
    check_resolver,
    check_routes,
    parse_ipv6_route,
    parse_networks,
    parse_route,
)
from airlock.errors import ConfigError
from airlock.spec import Spec
from unit.doctor.recorded_host import RecordedHost, fixture


def test_routes_parse_as_ip_route_shows_them() -> None:
    assert [str(r) for r in parse_route(fixture("route_default.txt"))] == [
        "default via 192.0.2.1 dev eth0", "192.0.2.0/24 dev eth0",
    ]  # fmt: skip
    assert [str(r) for r in parse_ipv6_route(fixture("ipv6_route_default.txt"))] == [
        "fd00::/64 dev eth0",
        "fe80::/64 dev eth0",
        "default via fd00::1 dev eth0",
        "fd00::2/128 dev eth0",
        "fe80::fc:ff:fe00:1/128 dev eth0",
        "ff00::/8 dev eth0",
    ]  # fmt: skip  (lo's routes and the unreachable default are left out)


def test_a_default_route_fails_and_local_only_passes() -> None:
    host = RecordedHost()
    host.files["/proc/net/route"] = fixture("route_default.txt")
    host.files["/proc/net/ipv6_route"] = fixture("ipv6_route_default.txt")
    v4, v6 = check_routes(host, [])
    assert (v4.status, v6.status) == ("fail", "fail")
    assert "default via 192.0.2.1 dev eth0" in v4.detail and "--site-network" in v4.fix
    assert "default via fd00::1" in v6.detail
    gapped = check_routes(RecordedHost().air_gapped(), [])
    assert [c.status for c in gapped] == ["pass", "pass"]


def test_site_networks() -> None:
    host = RecordedHost().air_gapped()
    host.files["/proc/net/route"] = fixture("route_site_router.txt")
    assert check_routes(host, [])[0].status == "fail"
    ok = check_routes(host, parse_networks(("10.20.0.0/16",)))[0]
    assert ok.status == "pass" and "site's router" in ok.detail
    narrow = check_routes(host, parse_networks(("10.20.5.0/24",)))[0]
    assert narrow.status == "fail"  # its gateway 10.20.0.1 is outside the site's networks given
    with pytest.raises(ConfigError, match="not a network"):
        parse_networks(("10.20.0.0/33",))


def test_resolver() -> None:
    host = RecordedHost().air_gapped()
    assert check_resolver(host, []).status == "pass"
    assert check_resolver(host, parse_networks(("192.168.0.0/16",))).status == "warn"
    host.files["/etc/resolv.conf"] = fixture("resolv_public.conf")
    public = check_resolver(host, [])
    assert public.status == "fail" and "8.8.8.8" in public.detail and "10.20.0.53" not in public.detail
    host.files["/etc/resolv.conf"] = fixture("resolv_stub.conf")
    assert check_resolver(host, []).status == "pass"  # the stub alone: upstream unknown
    host.files["/run/systemd/resolve/resolv.conf"] = fixture("resolved_upstream_public.conf")
    behind = check_resolver(host, [])
    assert behind.status == "fail" and "1.1.1.1" in behind.detail


def test_proxies() -> None:
    assert check_proxies({"NO_PROXY": "localhost"}).status == "pass"
    warned = check_proxies({"https_proxy": "http://10.20.0.8:3128", "PATH": "/usr/bin"})
    assert warned.status == "warn" and "https_proxy=http://10.20.0.8:3128" in warned.detail


def test_probe_needs_an_address_and_connects_only_there() -> None:
    host = RecordedHost(reachable={("127.0.0.1", 9)})
    assert [c.status for c in check_probes(host, ("127.0.0.1:9", "[::1]:443"))] == ["fail", "pass"]
    assert host.connected == [("127.0.0.1", 9), ("::1", 443)]
    for bad in ("example.com:443", "127.0.0.1", "127.0.0.1:99999"):
        with pytest.raises(ConfigError, match="--probe"):
            check_probes(host, (bad,))


def test_real_probe_on_loopback() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert check_probes(RealHost(), (f"127.0.0.1:{port}",))[0].status == "fail"
    assert check_probes(RealHost(), (f"127.0.0.1:{port}",))[0].status == "pass"  # closed now: refused


def test_gateway_port_on_this_machine() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        spec = Spec.model_validate({"gateway": {"host": "127.0.0.1", "port": port}})
        taken = check_port(RealHost(), spec)
        assert taken.status == "fail" and "EADDRINUSE" in taken.detail and "ss -ltnp" in taken.fix
    assert check_port(RealHost(), spec).status == "pass"
    named = Spec.model_validate({"gateway": {"host": "gateway.site", "port": port}})
    assert check_port(RealHost(), named).status == "skip"
    elsewhere = Spec.model_validate({"gateway": {"host": "192.0.2.77", "port": port}})
    assert check_port(RealHost(), elsewhere).status == "fail"  # not an address of this host
