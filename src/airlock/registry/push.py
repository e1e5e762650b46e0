"""Push an image into a registry over the OCI distribution API, digests preserved end to end.

Blobs go first (a ``HEAD`` skips each one the registry already has, so a rerun after an interruption
pushes only what is missing; uploads run in parallel), each as ``POST`` then one streamed monolithic
``PUT ?digest=``; the manifest goes last, by tag (or by digest), and the ``Docker-Content-Digest``
the registry answers must be the SHA-256 of the bytes sent. Each blob's SHA-256 is computed as it
streams: the last chunk is held back until the digest checks, so a blob that does not match is never
completed; its upload is cancelled (``DELETE``) and :class:`~airlock.errors.IntegrityError` names it.

Auth: HTTP basic, and the Bearer token flow (``WWW-Authenticate: Bearer realm=..,service=..``, a
token asked for ``repository:REPO:pull,push``, with the basic credentials when there are some).
Credentials come from :class:`RegistryTarget` or ``AIRLOCK_REGISTRY_USERNAME`` /
``AIRLOCK_REGISTRY_PASSWORD``.

Why a client here rather than oras-py or skopeo: install streams each blob straight from the bundle's
volumes (decompressing where pack compressed) and checks it as it passes, with no copy of a 20 GB
image on disk first, which neither takes as input (skopeo reads whole images from a transport such as
an OCI layout, oras-py pushes files); and the air-gapped side may lack skopeo. The protocol part used
is small (HEAD, POST, PUT, a token GET) over httpx.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from airlock.common.progress import Meter, ProgressSink
from airlock.errors import AirlockError, ConfigError, IntegrityError, StoreError
from airlock.registry.oci import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageIndex,
    OciLayout,
    check_digest,
    sha256_digest,
)

if TYPE_CHECKING:
    import httpx

CHUNK = 1024 * 1024
ENV_USER = "AIRLOCK_REGISTRY_USERNAME"
ENV_PASSWORD = "AIRLOCK_REGISTRY_PASSWORD"  # noqa: S105 (the variable's name, not a password)
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_RERUN = "nothing pushed so far is lost: a rerun pushes only the blobs the registry still lacks"


@dataclass(frozen=True)
class RegistryTarget:
    """Where to push. ``host`` is ``HOST:PORT`` (https), or ``https://HOST:PORT`` / ``http://HOST:PORT``.

    ``tls_verify=False`` speaks https without checking the certificate; ``ca_file`` trusts a private CA;
    ``plain_http`` (or an ``http://`` host) speaks plain http. ``username``/``password`` default to
    ``AIRLOCK_REGISTRY_USERNAME``/``AIRLOCK_REGISTRY_PASSWORD`` from the environment.
    """

    host: str
    tls_verify: bool = True
    ca_file: Path | None = None
    plain_http: bool = False
    username: str | None = None
    password: str | None = None

    @property
    def scheme(self) -> str:
        if self.host.startswith("http://"):
            return "http"
        if self.host.startswith("https://"):
            return "https"
        return "http" if self.plain_http else "https"

    @property
    def address(self) -> str:
        """``HOST:PORT`` without a scheme or trailing slash (what image references use)."""
        return self.host.removeprefix("http://").removeprefix("https://").rstrip("/")

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def credentials(self) -> tuple[str, str] | None:
        user = self.username if self.username is not None else os.environ.get(ENV_USER)
        password = self.password if self.password is not None else os.environ.get(ENV_PASSWORD)
        if user is None and password is None:
            return None
        return user or "", password or ""


@dataclass(frozen=True)
class BlobSource:
    """A blob to push: its digest and size, and ``open`` giving a fresh reader of its raw bytes."""

    digest: str
    size: int
    open: Callable[[], BinaryIO]


@dataclass(frozen=True)
class PushResult:
    reference: str  # HOST/REPO@sha256:...
    digest: str
    pushed_blobs: int
    skipped_blobs: int
    bytes_sent: int


def _caused_by_tls(exc: BaseException) -> bool:
    """Whether an ssl.SSLError (a handshake or certificate failure) is in the exception's chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class RegistrySession:
    """One httpx client with the target's TLS settings and whatever auth the registry asks for."""

    def __init__(
        self, target: RegistryTarget, repository: str, *, workers: int, actions: str = "pull,push"
    ) -> None:
        import httpx

        self.target = target
        self.repository = repository
        self.actions = (
            actions  # the token scope's actions: "pull" to read only (some token services refuse push)
        )
        self._lock = threading.Lock()
        self._auth: str | None = None
        verify: ssl.SSLContext | bool = True
        if target.scheme == "https":
            if not target.tls_verify:
                verify = False
            elif target.ca_file is not None:
                try:
                    verify = ssl.create_default_context(cafile=str(target.ca_file))
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigError(
                        f"the registry CA file {target.ca_file} cannot be read: {exc}",
                        hint="give a PEM file with --registry-ca-file",
                    ) from exc
        self.client = httpx.Client(
            base_url=target.base_url,
            verify=verify,
            timeout=httpx.Timeout(30.0, read=600.0, write=600.0),
            limits=httpx.Limits(max_connections=workers + 2, max_keepalive_connections=workers + 2),
            headers={"User-Agent": "airlock"},
        )

    def close(self) -> None:
        self.client.close()

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header the registry last asked for (none before a login)."""
        return {"Authorization": self._auth} if self._auth else {}

    # -- errors, named for the user
    def unreachable(self, exc: Exception, doing: str) -> AirlockError:
        import httpx

        host = self.target.address
        text = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError) and (_caused_by_tls(exc) or "SSL" in text):
            return StoreError(
                f"TLS with the registry at {host} failed while {doing}: {text}",
                hint="give its CA with --registry-ca-file, turn checking off with --registry-tls-verify=false, "
                "or use http://HOST:PORT for a plain-HTTP registry",
            )
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return StoreError(
                f"cannot reach the registry at {host} ({self.target.scheme}) while {doing}: {text}",
                hint="check that it runs at that address, or give another with --registry HOST:PORT "
                "(http://HOST:PORT for a plain-HTTP registry)",
            )
        return StoreError(
            f"the connection to the registry at {host} broke while {doing}: {text}", hint=_RERUN
        )

    def refused(self, response: httpx.Response, doing: str) -> AirlockError:
        host = self.target.address
        body = response.text[:300].strip().replace("\n", " ")
        if response.status_code in (401, 403):
            who = "the given account" if self.target.credentials() else "no credentials"
            return StoreError(
                f"the registry at {host} refused {doing} with {who} ({response.status_code}): {body}",
                hint=f"set {ENV_USER} and {ENV_PASSWORD} for an account that may push to {self.repository}",
            )
        return StoreError(
            f"the registry at {host} refused {doing} ({response.status_code}): {body}", hint=_RERUN
        )

    # -- auth
    def _login(self, header: str) -> None:
        import httpx

        scheme, params = _challenge(header)
        creds = self.target.credentials()
        if scheme == "basic":
            if creds is None:
                raise StoreError(
                    f"the registry at {self.target.address} asks for a username and password",
                    hint=f"set {ENV_USER} and {ENV_PASSWORD}",
                )
            self._auth = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            return
        if scheme != "bearer" or "realm" not in params:
            raise StoreError(
                f"the registry at {self.target.address} asks for auth airlock does not speak: {header}"
            )
        query = {"scope": f"repository:{self.repository}:{self.actions}"}
        if "service" in params:
            query["service"] = params["service"]
        try:
            answer = self.client.get(
                params["realm"], params=query, auth=httpx.BasicAuth(*creds) if creds else None
            )
        except httpx.HTTPError as exc:
            raise self.unreachable(exc, f"asking {params['realm']} for a token") from exc
        if answer.status_code != 200:
            raise self.refused(answer, "a token")
        try:
            token = answer.json().get("token") or answer.json().get("access_token")
        except ValueError:
            token = None
        if not isinstance(token, str) or not token:
            raise StoreError(f"the token service {params['realm']} answered without a token")
        self._auth = f"Bearer {token}"

    def request(
        self,
        method: str,
        url: str,
        *,
        doing: str,
        headers: dict[str, str] | None = None,
        content: bytes | Iterator[bytes] | None = None,
    ) -> httpx.Response:
        """A request with the current auth; on a 401 log in (as the challenge says) and retry once. A
        streamed body cannot be sent twice: its 401 comes back to the caller, which starts over."""
        import httpx

        for attempt in (0, 1):
            sent_headers = dict(headers or {})
            if self._auth:
                sent_headers["Authorization"] = self._auth
            try:
                response = self.client.request(method, url, headers=sent_headers, content=content)
            except httpx.HTTPError as exc:
                raise self.unreachable(exc, doing) from exc
            if response.status_code == 401 and "WWW-Authenticate" in response.headers:
                with self._lock:
                    if self._auth == sent_headers.get("Authorization"):  # not renewed by another thread yet
                        self._login(response.headers["WWW-Authenticate"])
                if attempt == 0 and not isinstance(content, Iterator):
                    continue
            return response
        return response

    def prime(self) -> None:
        """Log in before any upload, so streamed bodies go out once, with auth."""
        response = self.request("GET", "/v2/", doing="checking the API (/v2/)")
        if response.status_code not in (200, 401):
            raise self.refused(response, "the API check (/v2/)")
        if response.status_code == 401 and self._auth is None:
            self._login(response.headers.get("WWW-Authenticate", ""))
        if self._auth and self._auth.startswith("Bearer"):
            # A token for /v2/ may lack the repository's scope: ask for it as a blob request would.
            probe = self.request(
                "HEAD", f"/v2/{self.repository}/blobs/sha256:{'0' * 64}", doing="checking auth"
            )
            if probe.status_code in (401, 403):
                raise self.refused(probe, f"access to {self.repository}")


def _check_repository(repository: str, tag: str | None) -> None:
    if not _REPO_RE.match(repository) or len(repository) > 255:
        raise ConfigError(
            f"{repository!r} is not a valid repository name", hint="lowercase path, e.g. team/vllm"
        )
    if tag is not None and not _TAG_RE.match(tag):
        raise ConfigError(f"{tag!r} is not a valid tag", hint="letters, digits, '_', '.', '-'; at most 128")


def _has_blob(session: RegistrySession, digest: str) -> bool:
    response = session.request(
        "HEAD", f"/v2/{session.repository}/blobs/{digest}", doing=f"checking blob {digest}"
    )
    if response.status_code == 200:
        return True
    if response.status_code == 404:
        return False
    raise session.refused(response, f"a check of blob {digest}")


def _checked_chunks(blob: BlobSource, meter: Meter, sent: list[int]) -> Iterator[bytes]:
    """The blob's bytes in chunks, the last one held back until its size and SHA-256 check: a blob
    that does not match is never completed on the registry."""
    h = hashlib.sha256()
    total = 0
    with blob.open() as reader:
        chunk = reader.read(CHUNK)
        while True:
            following = reader.read(CHUNK) if chunk else b""
            h.update(chunk)
            total += len(chunk)
            if not following:
                got = "sha256:" + h.hexdigest()
                if total != blob.size or got != blob.digest:
                    raise IntegrityError(
                        f"image blob {blob.digest} does not match: {total} bytes with SHA-256 {got}, "
                        f"expected {blob.size} bytes",
                        hint="the bundle's copy is damaged; run `airlock verify`, rebuild the volume, and rerun",
                    )
            if chunk:
                yield chunk
                meter(len(chunk))
                sent[0] += len(chunk)
            if not following:
                return
            chunk = following


def _upload(session: RegistrySession, blob: BlobSource, meter: Meter, sent: list[int]) -> None:
    """POST an upload, then PUT the blob's bytes in one streamed request; once more if the registry
    asked for fresh auth (a token that expired during a long push)."""
    import httpx

    repo = session.repository
    for attempt in (0, 1):
        start = session.request(
            "POST", f"/v2/{repo}/blobs/uploads/", doing=f"starting the upload of blob {blob.digest}"
        )
        if start.status_code != 202 or "Location" not in start.headers:
            raise session.refused(start, f"the upload of blob {blob.digest}")
        location = httpx.URL(str(start.url)).join(start.headers["Location"])
        url = location.copy_merge_params({"digest": blob.digest})
        mine = [0]
        try:
            done = session.request(
                "PUT",
                str(url),
                content=_checked_chunks(blob, meter, mine),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
                doing=f"pushing blob {blob.digest} ({blob.size} bytes)",
            )
        except IntegrityError:
            _cancel(session, location)
            raise
        if done.status_code == 201:
            sent[0] += mine[0]
            answered = done.headers.get("Docker-Content-Digest")
            if answered is not None and answered != blob.digest:
                raise IntegrityError(f"the registry stored blob {blob.digest} as {answered}")
            return
        _cancel(session, location)
        if done.status_code != 401 or attempt == 1:
            raise session.refused(done, f"blob {blob.digest} of {repo}")


def _cancel(session: RegistrySession, location: httpx.URL) -> None:
    with contextlib.suppress(AirlockError):
        session.request("DELETE", str(location), doing="cancelling an upload")


def push_image(
    target: RegistryTarget,
    repository: str,
    tag: str | None,
    manifest: bytes,
    media_type: str,
    blobs: Sequence[BlobSource],
    *,
    progress: ProgressSink | None = None,
    workers: int = 4,
) -> PushResult:
    """Push ``blobs`` (the config and layers; or, for an index, nothing: push its manifests first),
    then ``manifest`` by ``tag`` (by its digest when ``tag`` is None). Blobs the registry already has
    are skipped, so a rerun after any failure sends only what is missing."""
    _check_repository(repository, tag)
    for blob in blobs:
        check_digest(blob.digest)
    digest = sha256_digest(manifest)
    session = RegistrySession(target, repository, workers=workers)
    try:
        session.prime()
        unique = list({b.digest: b for b in blobs}.values())
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            present = list(pool.map(lambda b: _has_blob(session, b.digest), unique))
        missing = sorted((b for b, p in zip(unique, present, strict=True) if not p), key=lambda b: -b.size)
        meter = Meter(progress, f"push {repository}", sum(b.size for b in missing))
        sent = [0] * len(missing)  # each upload's bytes, counted in its own slot

        def one(i: int) -> None:
            mine = [0]
            _upload(session, missing[i], meter, mine)
            sent[i] = mine[0]

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for future in [pool.submit(one, i) for i in range(len(missing))]:
                future.result()
        meter.finish()
        ref = tag if tag is not None else digest
        put = session.request(
            "PUT",
            f"/v2/{repository}/manifests/{ref}",
            content=manifest,
            headers={"Content-Type": media_type},
            doing=f"pushing the manifest {digest}",
        )
        if put.status_code != 201:
            raise session.refused(put, f"the manifest {digest} of {repository}")
        answered = put.headers.get("Docker-Content-Digest")
        if answered != digest:
            raise IntegrityError(
                f"the registry at {target.address} stored manifest {digest} of {repository} as {answered}",
                hint="the registry rewrote the manifest; digests are not preserved there",
            )
        return PushResult(
            reference=f"{target.address}/{repository}@{digest}",
            digest=digest,
            pushed_blobs=len(missing),
            skipped_blobs=len(unique) - len(missing),
            bytes_sent=sum(sent),
        )
    finally:
        session.close()


def image_exists(target: RegistryTarget, repository: str, digest: str) -> bool:
    """Whether the registry serves manifest ``digest`` in ``repository``."""
    _check_repository(repository, None)
    check_digest(digest)
    session = RegistrySession(target, repository, workers=1)
    try:
        session.prime()
        response = session.request(
            "HEAD",
            f"/v2/{repository}/manifests/{digest}",
            headers={"Accept": ACCEPT},
            doing="checking the manifest",
        )
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise session.refused(response, f"a check of manifest {digest}")
    finally:
        session.close()


def layout_image(layout: OciLayout, digest: str) -> tuple[bytes, str, list[BlobSource]]:
    """An image manifest of an OCI layout as ``push_image`` takes it: its bytes, its media type, and
    its config and layers as blob sources read from the layout."""
    data = layout.read_blob(digest)
    found = layout.manifest(digest)
    if isinstance(found, ImageIndex):
        raise ConfigError(f"{digest} is an image index; push each platform's manifest on its own")
    media_type = found.media_type or OCI_MANIFEST

    def source(d: str, size: int) -> BlobSource:
        path = layout.blob_path(d)
        return BlobSource(digest=d, size=size, open=lambda: path.open("rb"))

    blobs = [source(found.config.digest, found.config.size)] + [
        source(x.digest, x.size) for x in found.layers
    ]
    return data, media_type, blobs
