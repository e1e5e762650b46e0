"""The gateway's TLS: one live :class:`ssl.SSLContext`, its certificate re-read on SIGHUP.

``gateway.tls_cert`` and ``gateway.tls_key`` turn HTTPS on (TLS 1.2 at least); ``gateway.tls_client_ca``
adds mutual TLS: a client without a certificate signed by that CA is refused at the handshake.

**Reload without dropping a connection.** :meth:`ServerTls.reload` loads the files into a scratch
context first (a half-written file or a key that does not match the certificate leaves the served
one untouched and is logged), then into the live context with ``load_cert_chain``: OpenSSL copies the
context's certificate into each connection at its handshake, so connections already open keep theirs
and every new one gets the new certificate. The client CA file is read again too; CAs are only ever
added to a live context, so removing one takes a restart.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import ConfigError
from airlock.spec import GatewaySpec

log = logging.getLogger("airlock.serving.tls")


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None

    @classmethod
    def of(cls, gateway: GatewaySpec) -> TlsFiles | None:
        if gateway.tls_cert is None or gateway.tls_key is None:
            return None
        return cls(gateway.tls_cert, gateway.tls_key, gateway.tls_client_ca)


def _load(context: ssl.SSLContext, files: TlsFiles) -> None:
    """Load the certificate and key (and the client CA) into ``context``; a ConfigError names the file."""
    for what, path in (("tls_cert", files.cert), ("tls_key", files.key), ("tls_client_ca", files.client_ca)):
        if path is not None and not path.is_file():
            raise ConfigError(
                f"gateway.{what} {path}: no such file", hint="give the path of a PEM file that exists"
            )
    try:
        context.load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"gateway.tls_cert {files.cert} with gateway.tls_key {files.key}: cannot be loaded ({exc})",
            hint="both must be PEM; the key must be the certificate's, unencrypted",
        ) from exc
    if files.client_ca is not None:
        try:
            context.load_verify_locations(cafile=files.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"gateway.tls_client_ca {files.client_ca}: cannot be loaded ({exc})",
                hint="give the PEM certificate of the CA that signs the clients' certificates",
            ) from exc


def _new_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    if files.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
    _load(context, files)
    return context


class ServerTls:
    """The served context (``context``), built from ``files``; :meth:`reload` re-reads them."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.context = _new_context(files)  # a ConfigError at start: serve fails with its line

    def reload(self) -> bool:
        """Re-read the files into the live context; False (logged, the old certificate still served)
        when they cannot be loaded."""
        try:
            _new_context(self.files)  # the files as a whole, before the live context is touched
            _load(self.context, self.files)
        except ConfigError as exc:
            log.error("TLS not reloaded, the previous certificate is still served: %s", exc.message)
            return False
        log.warning("TLS certificate reloaded from %s", self.files.cert)
        return True
