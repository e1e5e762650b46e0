"""Is there a way out? Read from the host's own state only, never by sending a packet: the routing
tables (``/proc/net/route``, ``/proc/net/ipv6_route``), the resolver (``/etc/resolv.conf``, and
systemd-resolved's upstream list behind its 127.0.0.53 stub) and the proxy variables. The one
exception is ``--probe HOST:PORT``: one TCP connection to exactly the address an operator named
(an IP address: a name would need a DNS query, a packet to somewhere else).

Also the gateway's port: a bind on the spec's host and port (local; nothing is sent).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from airlock.doctor.host import Host, numeric_address
from airlock.doctor.model import Check
from airlock.errors import ConfigError
from airlock.spec import Spec

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

RTF_UP = 0x0001
RTF_REJECT = 0x0200
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "FTP_PROXY")
RESOLVED_STUB = "127.0.0.53"
ROUTE_FIX = (
    "remove it (ip route del default; and in the network configuration), or, if its gateway is the "
    "site's own router with no way out, name that network with --site-network CIDR"
)


@dataclass(frozen=True)
class Route:
    iface: str
    destination: Network
    gateway: Address | None  # None: on-link

    @property
    def is_default(self) -> bool:
        return self.destination.prefixlen == 0

    def __str__(self) -> str:
        via = f" via {self.gateway}" if self.gateway else ""
        return f"{'default' if self.is_default else self.destination}{via} dev {self.iface}"


def _v4(hex_le: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(hex_le), "little"))


def parse_route(text: str) -> list[Route]:
    """/proc/net/route: addresses as little-endian hex; routes not up are left out."""
    routes = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8 or not int(f[3], 16) & RTF_UP or int(f[3], 16) & RTF_REJECT:
            continue
        mask = bin(int.from_bytes(bytes.fromhex(f[7]), "little")).count("1")
        gateway = _v4(f[2])
        destination = ipaddress.IPv4Network((_v4(f[1]), mask), strict=False)
        routes.append(Route(f[0], destination, gateway if int(gateway) else None))
    return routes


def parse_ipv6_route(text: str) -> list[Route]:
    """/proc/net/ipv6_route: big-endian hex; loopback's, reject routes and routes not up are left out."""
    routes = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 10 or f[9] == "lo":
            continue
        flags = int(f[8], 16)
        if not flags & RTF_UP or flags & RTF_REJECT:
            continue
        destination = ipaddress.IPv6Network((ipaddress.IPv6Address(bytes.fromhex(f[0])), int(f[1], 16)))
        gateway = ipaddress.IPv6Address(bytes.fromhex(f[4]))
        routes.append(Route(f[9], destination, gateway if int(gateway) else None))
    return routes


def parse_networks(cidrs: tuple[str, ...]) -> list[Network]:
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"--site-network {cidr!r}: not a network ({exc})", hint="write it like 10.0.0.0/8"
            ) from exc
    return networks


def _inside(item: Address | Network, networks: list[Network]) -> bool:
    for net in networks:
        if item.version != net.version:
            continue
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            if item.subnet_of(net):  # type: ignore[arg-type]  # same version checked above
                return True
        elif item in net:
            return True
    return False


def _local_only(destination: Network) -> bool:
    """Link-local, multicast and loopback destinations never leave the site."""
    return destination.is_link_local or destination.is_multicast or destination.is_loopback


def check_routes(host: Host, site: list[Network]) -> list[Check]:
    checks = []
    for path, parse, name in (
        ("/proc/net/route", parse_route, "route out (IPv4)"),
        ("/proc/net/ipv6_route", parse_ipv6_route, "route out (IPv6)"),
    ):
        text = host.read(path)
        if text is None:
            checks.append(Check(name, "skip", f"{path} cannot be read (no such protocol on this host)"))
            continue
        routes = parse(text)
        defaults = [r for r in routes if r.is_default]
        blessed = [r for r in defaults if r.gateway is not None and _inside(r.gateway, site)]
        outside = [
            r
            for r in routes
            if not r.is_default
            and site
            and not _local_only(r.destination)
            and not _inside(r.destination, site)
        ]
        public = [
            r
            for r in routes
            if not r.is_default and not site and not _local_only(r.destination) and r.destination.is_global
        ]
        bad_defaults = [r for r in defaults if r not in blessed]
        if bad_defaults:
            checks.append(
                Check(
                    name,
                    "fail",
                    f"{path} has a default route: {bad_defaults[0]}"
                    + (f" ({len(bad_defaults)} in all)" if len(bad_defaults) > 1 else "")
                    + "; anything not on a local network goes that way",
                    ROUTE_FIX,
                )
            )
        elif outside:
            checks.append(
                Check(
                    name,
                    "fail",
                    f"{path}: a route leaves the site's networks: {outside[0]}",
                    "remove it, or add its network with --site-network if it is the site's",
                )
            )
        elif public:
            checks.append(
                Check(
                    name,
                    "warn",
                    f"{path}: a route to a public network: {public[0]}",
                    "remove it, or name the site's networks with --site-network so doctor can tell",
                )
            )
        else:
            via = f"; default via the site's router ({blessed[0]})" if blessed else ""
            checks.append(Check(name, "pass", f"{path}: no default route, {len(routes)} local routes{via}"))
    return checks


def nameservers(text: str) -> list[str]:
    return [
        line.split()[1]
        for line in text.splitlines()
        if line.strip().startswith("nameserver") and len(line.split()) > 1
    ]


def check_resolver(host: Host, site: list[Network]) -> Check:
    text = host.read("/etc/resolv.conf")
    if text is None:
        return Check("resolver", "pass", "no /etc/resolv.conf: names resolve from /etc/hosts only")
    servers = nameservers(text)
    source = "/etc/resolv.conf"
    if RESOLVED_STUB in servers:  # systemd-resolved: its upstream servers are the ones that matter
        upstream = host.read("/run/systemd/resolve/resolv.conf")
        if upstream is not None:
            servers = [s for s in servers if s != RESOLVED_STUB] + nameservers(upstream)
            source += " and systemd-resolved's /run/systemd/resolve/resolv.conf"
    if not servers:
        return Check("resolver", "pass", f"{source}: no nameserver")
    public, outside = [], []
    for server in servers:
        try:
            address = ipaddress.ip_address(server.split("%")[0])
        except ValueError:
            continue
        if address.is_loopback:
            continue
        if address.is_global:
            public.append(server)
        elif site and not _inside(address, site):
            outside.append(server)
    if public:
        return Check(
            "resolver",
            "fail",
            f"{source} names public nameservers: {', '.join(public)}",
            "point the resolver at the site's own DNS server (or none), in the network configuration",
        )
    if outside:
        return Check(
            "resolver",
            "warn",
            f"{source} names nameservers outside the site's networks: {', '.join(outside)}",
            "point the resolver at the site's DNS, or add its network with --site-network",
        )
    return Check("resolver", "pass", f"{source}: nameservers {', '.join(servers)} (none public)")


def check_proxies(environ: Mapping[str, str]) -> Check:
    found = {
        name: environ[name] for base in PROXY_VARIABLES for name in (base, base.lower()) if environ.get(name)
    }
    no_proxy = environ.get("NO_PROXY") or environ.get("no_proxy")
    if not found:
        extra = f" (NO_PROXY={no_proxy})" if no_proxy else ""
        return Check("proxy variables", "pass", f"no HTTP(S)_PROXY or ALL_PROXY set{extra}")
    listed = ", ".join(f"{k}={v}" for k, v in sorted(found.items()))
    return Check(
        "proxy variables",
        "warn",
        f"{listed}: a proxy is a way out if it reaches the internet; engines and pip would use it",
        "unset them for airlock (and in the service's environment), unless the proxy is the site's own mirror",
    )


def parse_probe(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    address = numeric_address(host) if sep else None
    if address is None or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(
            f"--probe {text!r}: give an IP address and a port, like 203.0.113.10:443 or [2001:db8::1]:443",
            hint="doctor does not resolve names: a DNS query would be a packet to another address",
        )
    return address, int(port_text)


def check_probes(host: Host, probes: tuple[str, ...]) -> list[Check]:
    checks = []
    for text in probes:
        address, port = parse_probe(text)
        connected = host.connect(address, port)
        name = f"probe {address}:{port}"
        if connected is None:
            checks.append(
                Check(name, "pass", f"one TCP connection to {address}:{port}: refused or timed out")
            )
        else:
            checks.append(
                Check(
                    name,
                    "fail",
                    f"{connected}: this host reaches it",
                    "close that way out: routes, firewall, or the proxy this host uses",
                )
            )
    return checks


def check_port(host: Host, spec: Spec | None) -> Check:
    gateway_host = spec.gateway.host if spec else "127.0.0.1"
    port = spec.gateway.port if spec else 8000
    name = f"port {port}"
    where = "the spec's gateway" if spec else "the gateway's default"
    if port == 0:
        return Check(name, "skip", f"{where} takes any free port (port: 0)")
    address = numeric_address(gateway_host)
    if address is None:
        return Check(
            name,
            "skip",
            f"{where} listens on {gateway_host!r}, a name: doctor does not resolve names (no DNS query)",
        )
    error = host.bind(address, port)
    if error is None:
        return Check(name, "pass", f"{address}:{port} is free ({where})")
    if error.startswith("EADDRINUSE"):
        fix = f"stop what listens there (ss -ltnp 'sport = :{port}'), or change gateway.port"
    elif error.startswith("EACCES"):
        fix = "ports below 1024 need root (or CAP_NET_BIND_SERVICE); use a higher gateway.port"
    elif error.startswith("EADDRNOTAVAIL"):
        fix = f"{address} is not an address of this host: change gateway.host"
    else:
        fix = "change gateway.host or gateway.port"
    return Check(name, "fail", f"cannot bind {address}:{port} ({where}): {error}", fix)
