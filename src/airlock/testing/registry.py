"""A real registry for tests: Debian's ``docker-registry`` (the CNCF distribution registry, 2.8) on
127.0.0.1, with its storage in a folder the test owns, and optionally basic or Bearer-token auth.

It can be stopped and started again on the same port and storage, to test a registry that goes down
in the middle of a push. With ``token=True`` the registry runs distribution's ``silly`` auth: it
answers every request without an ``Authorization`` header with a Bearer challenge naming
:class:`TokenServer`, and accepts any token, which is enough to exercise a client's token flow.

Example::

    with RunningRegistry(tmp / "reg") as reg:
        subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{reg.host}/x:1"])
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

# A fixed test credential and its bcrypt hash (cost 5) for the registry's htpasswd file: distribution
# reads only bcrypt, and the bcrypt package is not a dependency, so the hash was computed once.
TEST_USER = "airlock"
TEST_PASSWORD = "airlock-test-password"  # noqa: S105 (a fixed credential for test registries)
_TEST_HTPASSWD = "airlock:$2b$05$ZhHOAbLqUvTYxOiLBYkLh.V587zD6yUo6oY9YchhPIlWnnvBbibRa\n"


def write_self_signed(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (an IP address) and its key, as PEM files; the
    certificate is its own CA (pass it as a client's CA file)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airlock test registry")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TokenServer:
    """A token endpoint on 127.0.0.1: ``GET /token?service=..&scope=..`` answers ``{"token": ...}``
    and records each request's query and Authorization header in ``requests``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append((self.path, self.headers.get("Authorization")))
                body = json.dumps({"token": "test-token", "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02})
        self._thread.daemon = True
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class RunningRegistry:
    """``docker-registry serve`` on 127.0.0.1; ``host`` is ``127.0.0.1:PORT``, ``url`` its http URL.

    ``basic_auth``: htpasswd auth with :data:`TEST_USER` / :data:`TEST_PASSWORD`. ``token``: Bearer
    challenges pointing at a :class:`TokenServer` (``token_server``). ``tls``: https with a fresh
    self-signed certificate (``ca_file``).
    """

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        basic_auth: bool = False,
        token: bool = False,
        tls: bool = False,
        binary: str = "docker-registry",
    ) -> None:
        if basic_auth and token:
            raise ValueError("one auth scheme at a time")
        self.root = root
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self.binary = binary
        self.token_server = TokenServer() if token else None
        self._proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        auth = ""
        if basic_auth:
            (root / "htpasswd").write_text(_TEST_HTPASSWD)
            auth = f"auth:\n  htpasswd:\n    realm: airlock-test\n    path: {root / 'htpasswd'}\n"
        elif self.token_server is not None:
            auth = f"auth:\n  silly:\n    realm: {self.token_server.url}\n    service: airlock-test\n"
        tls_config = ""
        self.ca_file: Path | None = None  # with tls: the certificate to trust
        if tls:
            self.ca_file, key = write_self_signed(root)
            tls_config = f"  tls:\n    certificate: {self.ca_file}\n    key: {key}\n"
        self.config = root / "config.yml"
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n" + tls_config + auth
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """Start the registry and wait until ``/v2/`` answers (200, or 401 with auth)."""
        if self.running:
            return
        exe = shutil.which(self.binary)
        if exe is None:
            raise FileNotFoundError(f"{self.binary} is not installed (Debian package docker-registry)")
        log = (self.root / "registry.log").open("ab")
        self._proc = subprocess.Popen([exe, "serve", str(self.config)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                tail = (self.root / "registry.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"docker-registry exited with {self._proc.returncode}: {tail}")
            try:
                context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=context):  # noqa: S310 (our own URL)
                    return
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"docker-registry did not answer on {self.host} in {timeout:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the registry; its storage stays, and :meth:`start` serves it again on the same port."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        if self.token_server is not None:
            self.token_server.close()

    def has_blob(self, repository: str, digest: str) -> bool:
        """Whether the registry serves blob ``digest`` in ``repository`` (read straight from its
        storage, so it needs no auth and no client under test)."""
        hex_ = digest.removeprefix("sha256:")
        link = (
            self.root
            / "storage/docker/registry/v2/repositories"
            / repository
            / "_layers/sha256"
            / hex_
            / "link"
        )
        return link.is_file()

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{TEST_USER}:{TEST_PASSWORD}".encode()).decode()

    def __enter__(self) -> RunningRegistry:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
