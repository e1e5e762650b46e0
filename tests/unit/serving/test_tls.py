"""The gateway over TLS: HTTPS with the spec's certificate, mutual TLS refusing a client without a
certificate from the client CA at the handshake, and SIGHUP swapping the certificate for new
connections while the open ones carry on (in one process and with workers)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airlock.errors import ConfigError
from airlock.serving.tls import ServerTls, TlsFiles
from airlock.spec import GatewaySpec
from serve_procs import StartGateway, wait_for


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class Ca:
    def __init__(self, name: str, workdir: Path) -> None:
        self.workdir = workdir
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            self._builder(self.name, self.key.public_key(), serial=1)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = workdir / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(
        self, subject: x509.Name, public: ec.EllipticCurvePublicKey, serial: int
    ) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public)
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )

    def issue(self, name: str, serial: int, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = self._builder(subject, key.public_key(), serial)
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.workdir / f"{name}.crt", self.workdir / f"{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return issued


def _client(ca: Ca, cert: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.path)
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    return context


def _served_serial(url: str, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new connection is given."""
    port = int(url.rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _stream_serial(response: httpx.Response) -> int:
    der = response.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
    return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.parametrize("workers", [1, 2])
def test_mutual_tls_and_a_certificate_swapped_on_sighup(
    gateway_proc: StartGateway, tmp_path: Path, workers: int
) -> None:
    ca, rogue = Ca("clients-and-server-ca", tmp_path), Ca("rogue-ca", tmp_path)
    first, second = ca.issue("gw1", 1001, server=True), ca.issue("gw2", 2002, server=True)
    served = Issued(tmp_path / "served.crt", tmp_path / "served.key")
    served.cert.write_bytes(first.cert.read_bytes())
    served.key.write_bytes(first.key.read_bytes())
    alice, mallory = ca.issue("alice", 7, server=False), rogue.issue("mallory", 8, server=False)
    spec = GatewaySpec(
        auth=False, workers=workers, tls_cert=served.cert, tls_key=served.key, tls_client_ca=ca.path
    )
    gw = gateway_proc(spec)
    assert gw.url.startswith("https://127.0.0.1:")

    # mutual TLS: no client certificate, or one from another CA, is refused at the handshake
    for who in (None, mallory):
        with pytest.raises(httpx.TransportError):
            httpx.get(gw.url + "/health", verify=_client(ca, who), timeout=10)
    with pytest.raises(httpx.TransportError):  # nor does plain HTTP get through
        httpx.get(gw.url.replace("https", "http") + "/health", timeout=10)

    with httpx.Client(verify=_client(ca, alice), timeout=10) as kept:
        before = kept.get(gw.url + "/health")
        assert before.status_code == 200 and _stream_serial(before) == 1001

        # SIGHUP with a key that is not the certificate's: the served certificate stays
        served.cert.write_bytes(second.cert.read_bytes())
        gw.signal(signal.SIGHUP)
        assert kept.get(gw.url + "/health").status_code == 200
        assert _served_serial(gw.url, _client(ca, alice)) == 1001

        # the matching key too: every new connection gets the new certificate...
        served.key.write_bytes(second.key.read_bytes())
        gw.signal(signal.SIGHUP)
        wait_for(  # on new connections, whichever worker takes them
            "the new certificate",
            lambda: all(_served_serial(gw.url, _client(ca, alice)) == 2002 for _ in range(4 * workers)),
        )

        # ...while the connection opened before carries on with the old one
        after = kept.get(gw.url + "/health")
        assert after.status_code == 200 and _stream_serial(after) == 1001
    assert gw.stop() == 0


def test_files_that_cannot_load_are_a_config_error(tmp_path: Path) -> None:
    ca = Ca("ca", tmp_path)
    one, other = ca.issue("one", 1, server=True), ca.issue("other", 2, server=True)
    with pytest.raises(ConfigError, match="cannot be loaded") as info:
        ServerTls(TlsFiles(one.cert, other.key))
    assert info.value.hint is not None and "the key must be the certificate's" in info.value.hint
    with pytest.raises(ConfigError, match="no such file"):
        ServerTls(TlsFiles(one.cert, one.key, tmp_path / "missing-ca.pem"))
    tls = ServerTls(TlsFiles(one.cert, one.key))
    one.key.write_bytes(b"not a key")
    assert tls.reload() is False  # logged; the live context keeps serving the old pair


def test_the_spec_takes_certificate_and_key_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        GatewaySpec(tls_cert=tmp_path / "c.pem")
    with pytest.raises(ValueError, match="tls_client_ca needs tls_cert"):
        GatewaySpec(tls_client_ca=tmp_path / "ca.pem")
