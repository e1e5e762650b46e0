"""Pull an image from a registry into an OCI layout over the distribution API, on the staging side.

The manifest (or the index, then the manifest of the target platform) is fetched by tag or digest and
kept byte for byte, so the image keeps its upstream digest; a digest asked for must match what came.
Config and layers stream into the layout, each checked against its digest as it is written
(:meth:`OciLayout.add_blob_stream`); a blob the layout already holds is not fetched again, so a pull
that was interrupted resumes where it stopped, and a layer shared with an image pulled before is read
from disk. Registries that hand blobs to a CDN answer with a redirect, followed without our auth.

It shares the session (TLS settings, basic and token auth, errors named for the user) with
:mod:`airlock.registry.push`. ``docker.io`` is reached at ``registry-1.docker.io``.

Example::

    pulled = pull_image(RegistryTarget("registry-1.docker.io"), "vllm/vllm-openai", "v0.11.0",
                        OciLayout.create(cache), platform="linux/amd64")
    pulled.manifest.digest, pulled.index_digest
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from airlock.common.progress import Meter, ProgressSink
from airlock.errors import IntegrityError, StoreError
from airlock.registry.oci import (
    OCI_MANIFEST,
    Descriptor,
    ImageIndex,
    ImageManifest,
    OciLayout,
    parse_manifest,
    select_platform,
    sha256_digest,
)
from airlock.registry.push import ACCEPT, RegistrySession, RegistryTarget

if TYPE_CHECKING:
    import httpx

DOCKER_HUB_API = "registry-1.docker.io"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class PullResult:
    manifest: Descriptor  # the image manifest of the platform
    index_digest: str | None  # the index it was chosen from, if the reference named one
    fetched_blobs: int
    fetched_bytes: int
    reused_blobs: int  # already in the layout (an earlier pull, or a layer another image shares)


def source_target(registry: str, *, tls_verify: bool = True) -> RegistryTarget:
    """The registry of a reference as a target to read from; ``tls_verify=False`` (a spec's
    ``tls_verify: false``) speaks plain http to a loopback or site-internal registry."""
    host = DOCKER_HUB_API if registry == "docker.io" else registry
    return RegistryTarget(host, tls_verify=tls_verify, plain_http=not tls_verify)


class _Chunks(io.RawIOBase):
    """A readable raw stream over an httpx response's chunks (what add_blob_stream reads)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._left:
            self._left = next(self._chunks, b"")
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


def _manifest(session: RegistrySession, reference: str) -> tuple[bytes, str]:
    repo = session.repository
    response = session.request(
        "GET",
        f"/v2/{repo}/manifests/{reference}",
        headers={"Accept": ACCEPT},
        doing=f"reading {repo}:{reference}",
    )
    if response.status_code == 404:
        raise StoreError(
            f"{session.target.address}/{repo} has no image {reference!r}",
            hint="check the tag or digest (`skopeo list-tags` on the staging side lists the tags)",
        )
    if response.status_code != 200:
        raise session.refused(response, f"the manifest {reference} of {repo}")
    data = response.content
    if reference.startswith("sha256:") and sha256_digest(data) != reference:
        raise IntegrityError(
            f"{session.target.address}/{repo}@{reference}: the registry answered a manifest with digest "
            f"{sha256_digest(data)}",
            hint="the registry, or something between it and you, altered the manifest: do not pack this image",
        )
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip() or OCI_MANIFEST
    return data, media_type


def _fetch_blob(session: RegistrySession, layout: OciLayout, blob: Descriptor, meter: Meter) -> None:
    import httpx

    repo = session.repository
    doing = f"fetching blob {blob.digest} of {repo}"
    url = f"/v2/{repo}/blobs/{blob.digest}"
    headers = session.auth_headers()
    try:
        with session.client.stream("GET", url, headers=headers) as response:
            if response.status_code in (301, 302, 303, 307, 308) and "Location" in response.headers:
                target = httpx.URL(str(response.url)).join(response.headers["Location"])
                with session.client.stream("GET", str(target)) as redirected:  # no auth to a CDN
                    _store(session, layout, blob, redirected, meter, doing)
                return
            _store(session, layout, blob, response, meter, doing)
    except httpx.HTTPError as exc:
        raise session.unreachable(exc, doing) from exc


def _store(
    session: RegistrySession,
    layout: OciLayout,
    blob: Descriptor,
    response: httpx.Response,
    meter: Meter,
    doing: str,
) -> None:
    if response.status_code != 200:
        response.read()
        raise session.refused(response, doing)

    def counted() -> Iterator[bytes]:
        for chunk in response.iter_bytes(CHUNK):
            meter(len(chunk))
            yield chunk

    layout.add_blob_stream(
        blob.digest, io.BufferedReader(_Chunks(counted()), CHUNK), name=f"{session.target.address}: {doing}"
    )


def pull_image(
    target: RegistryTarget,
    repository: str,
    reference: str,
    layout: OciLayout,
    *,
    platform: str = "linux/amd64",
    progress: ProgressSink | None = None,
    workers: int = 4,
) -> PullResult:
    """Fetch ``repository:reference`` (a tag or a digest) for ``platform`` into ``layout``."""
    session = RegistrySession(target, repository, workers=workers, actions="pull")
    try:
        try:
            session.prime()
        except StoreError:
            if target.tls_verify or target.plain_http or target.scheme == "http":
                raise
            # tls_verify off: an https registry with a certificate we skip, else plain http
            session.close()
            session = RegistrySession(
                replace(target, plain_http=True), repository, workers=workers, actions="pull"
            )
            session.prime()
        data, media_type = _manifest(session, reference)
        index_digest = None
        found = parse_manifest(data, media_type)
        if isinstance(found, ImageIndex):
            index_digest = layout.add_blob_bytes(data)
            chosen = select_platform(found, platform)
            data, media_type = _manifest(session, chosen.digest)
            found = parse_manifest(data, media_type)
            if not isinstance(found, ImageManifest):
                raise StoreError(f"{repository}@{chosen.digest}: an index inside an index is not supported")
        digest = layout.add_blob_bytes(data)
        blobs = list({b.digest: b for b in [found.config, *found.layers]}.values())
        missing = [b for b in blobs if not layout.has_blob(b.digest)]
        meter = Meter(progress, f"pull {repository}", sum(b.size for b in missing))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for future in [pool.submit(_fetch_blob, session, layout, b, meter) for b in missing]:
                future.result()
        meter.finish()
        return PullResult(
            manifest=Descriptor(media_type=media_type, digest=digest, size=len(data)),
            index_digest=index_digest,
            fetched_blobs=len(missing),
            fetched_bytes=sum(b.size for b in missing),
            reused_blobs=len(blobs) - len(missing),
        )
    finally:
        session.close()
