"""Load images into a docker daemon: a tar streamed into ``docker load`` on stdin, never written to disk.

The tar holds both indexes docker reads: ``manifest.json`` (the docker-archive that every dockerd
loads, 20.10 included; measured: dockerd 20.10.24 refuses an OCI-only archive) and ``index.json`` +
``oci-layout`` (what dockerd 25+ with the containerd image store prefers). The blobs sit once each under
``blobs/sha256/<hex>``, as they are: gzip layers stay compressed, docker decompresses them as it loads.
Each image's ID is then its config digest, checked with ``docker image inspect`` after the load.

Each blob's SHA-256 is computed as it streams; on a mismatch ``docker load`` is stopped before the tar
ends (it loads nothing from a tar it has not read whole) and :class:`~airlock.errors.IntegrityError`
names the blob.

Example::

    docker_load(layout, [("sha256:...", "registry.local/vllm/vllm-openai:v0.11.0")])
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from typing import IO, BinaryIO

from airlock.errors import ConfigError, IntegrityError, StoreError
from airlock.registry.oci import (
    OCI_MANIFEST,
    REF_NAME,
    ImageManifest,
    OciLayout,
    check_digest,
    parse_manifest,
    sha256_digest,
)
from airlock.registry.push import BlobSource

CHUNK = 1024 * 1024
# name[:tag] where name is [host[:port]/]path; a digest is not a tag docker load can set
_REF_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._:/-]*?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))$")
_NO_DAEMON = ("Cannot connect to the Docker daemon", "Is the docker daemon running", "connection refused")


def _docker_env(docker_host: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if docker_host is not None:
        env["DOCKER_HOST"] = docker_host
    return env


def _where(docker_host: str | None) -> str:
    return docker_host or os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"


def check_daemon(*, docker_host: str | None = None, docker: str = "docker") -> str:
    """The daemon's version; a clear error when the docker client is missing or no daemon answers."""
    exe = shutil.which(docker)
    if exe is None:
        raise StoreError(
            f"the docker client ({docker}) is not installed",
            hint="install docker (Debian: apt install docker.io), or install with --registry or --oci instead",
        )
    try:
        done = subprocess.run(
            [exe, "version", "--format", "{{.Server.Version}}"],
            env=_docker_env(docker_host),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StoreError(f"the docker daemon at {_where(docker_host)} did not answer in 60 s") from exc
    if done.returncode != 0 or not done.stdout.strip():
        reason = (done.stderr.strip().splitlines() or ["no answer"])[-1]
        raise StoreError(
            f"no docker daemon answers at {_where(docker_host)}: {reason}",
            hint="start it (systemctl start docker, or dockerd), or point DOCKER_HOST at a running one",
        )
    return done.stdout.strip()


def _tag_of(reference: str) -> str:
    if _REF_RE.match(reference) is None or "@" in reference:
        raise ConfigError(
            f"{reference!r} cannot be a docker image name: it needs NAME:TAG",
            hint="e.g. registry.local/vllm/vllm-openai:v0.11.0",
        )
    return reference


def _checked_reader(blob: BlobSource) -> IO[bytes]:
    """A reader that checks the blob's size and SHA-256 as tarfile reads it; the check fires on the
    last read, before tarfile writes the end of the archive."""

    class Reader(io.RawIOBase):
        def __init__(self) -> None:
            self._inner: BinaryIO = blob.open()
            self._hash = hashlib.sha256()
            self._seen = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            data = self._inner.read(len(buffer))
            self._hash.update(data)
            self._seen += len(data)
            if self._seen > blob.size or ((not data or self._seen == blob.size) and not self._ok()):
                raise IntegrityError(
                    f"image blob {blob.digest} does not match ({self._seen} bytes read, {blob.size} expected, "
                    f"SHA-256 {self._hash.hexdigest()})",
                    hint="the bundle's copy is damaged; run `airlock verify`, rebuild the volume, and rerun",
                )
            buffer[: len(data)] = data
            return len(data)

        def _ok(self) -> bool:
            return self._seen == blob.size and "sha256:" + self._hash.hexdigest() == blob.digest

        def close(self) -> None:
            self._inner.close()
            super().close()

    return io.BufferedReader(Reader(), buffer_size=CHUNK)


def _archive_parts(
    layout: OciLayout, images: Sequence[tuple[str, str]], sources: Mapping[str, BlobSource]
) -> tuple[list[BlobSource], bytes, bytes]:
    """The blobs to stream (each once), ``manifest.json`` and ``index.json``."""
    blobs: dict[str, BlobSource] = {}
    docker_manifest = []
    oci_index = []

    def source(digest: str, size: int) -> BlobSource:
        if digest in sources:
            return sources[digest]
        path = layout.blob_path(digest)
        if not path.is_file():
            raise StoreError(f"{layout.root}: blob {digest} is missing")
        return BlobSource(digest, size, lambda: path.open("rb"))

    for digest, reference in images:
        raw, manifest = _image_manifest(layout, digest, sources)
        blobs[digest] = BlobSource(digest, len(raw), lambda raw=raw: io.BytesIO(raw))  # type: ignore[misc]
        for d in [manifest.config, *manifest.layers]:
            blobs.setdefault(d.digest, source(d.digest, d.size))
        docker_manifest.append(
            {
                "Config": f"blobs/sha256/{check_digest(manifest.config.digest)}",
                "RepoTags": [_tag_of(reference)],
                "Layers": [f"blobs/sha256/{check_digest(layer.digest)}" for layer in manifest.layers],
            }
        )
        oci_index.append(
            {
                "mediaType": manifest.media_type or OCI_MANIFEST,
                "digest": digest,
                "size": len(raw),
                "annotations": {REF_NAME: reference.rsplit(":", 1)[1], "io.containerd.image.name": reference},
            }
        )
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": oci_index,
    }
    return list(blobs.values()), json.dumps(docker_manifest).encode(), json.dumps(index).encode()


def _write_tar(out: IO[bytes], blobs: list[BlobSource], manifest_json: bytes, index_json: bytes) -> None:
    def entry(name: str, size: int, *, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime, info.type = (
            size,
            0o755 if kind == tarfile.DIRTYPE else 0o644,
            0,
            kind,
        )
        return info

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in ("blobs", "blobs/sha256"):
            tar.addfile(entry(name, 0, kind=tarfile.DIRTYPE))
        for blob in blobs:
            with _checked_reader(blob) as reader:
                tar.addfile(entry(f"blobs/sha256/{check_digest(blob.digest)}", blob.size), reader)
        for name, data in (
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", index_json),
            ("manifest.json", manifest_json),
        ):
            tar.addfile(entry(name, len(data)), io.BytesIO(data))


def docker_load(
    layout: OciLayout,
    images: Sequence[tuple[str, str]],
    *,
    docker_host: str | None = None,
    docker: str = "docker",
    sources: Mapping[str, BlobSource] | None = None,
) -> list[str]:
    """Load each ``(manifest digest, reference)`` of ``images`` into the docker daemon, tagged with its
    reference (``NAME:TAG``); return the references loaded.

    Blobs are read from ``layout``, or from ``sources`` (digest -> source) where it has them, so a caller
    can stream them from elsewhere (the bundle's volumes). Every image's ID must come out as its config
    digest, or :class:`~airlock.errors.IntegrityError` says so.
    """
    if not images:
        return []
    check_daemon(docker_host=docker_host, docker=docker)
    blobs, manifest_json, index_json = _archive_parts(layout, images, sources or {})
    exe = shutil.which(docker) or docker
    env = _docker_env(docker_host)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([exe, "load"], stdin=subprocess.PIPE, stdout=log, stderr=log, env=env)
        assert proc.stdin is not None
        try:
            _write_tar(proc.stdin, blobs, manifest_json, index_json)
            proc.stdin.close()
        except IntegrityError:
            proc.kill()
            proc.wait()
            raise
        except BrokenPipeError:
            pass  # docker load stopped reading: its own message says why
        finally:
            if proc.poll() is None and not proc.stdin.closed:
                proc.kill()
        code = proc.wait()
        log.seek(0)
        said = log.read().decode(errors="replace").strip()
    if code != 0:
        raise StoreError(
            f"docker load into {_where(docker_host)} failed: {said.splitlines()[-1] if said else f'exit {code}'}",
            hint="nothing was tagged; check the daemon's log and its free space, then rerun",
        )
    loaded = []
    for digest, reference in images:
        loaded.append(reference)
        want = _image_manifest(layout, digest, sources or {})[1].config.digest
        got = _inspect_id(exe, reference, env)
        if got != want:
            raise IntegrityError(f"docker loaded {reference} with ID {got}, not its config digest {want}")
    return loaded


def _image_manifest(
    layout: OciLayout, digest: str, sources: Mapping[str, BlobSource]
) -> tuple[bytes, ImageManifest]:
    """An image manifest's bytes (checked against its digest) and its parsed form."""
    check_digest(digest)
    if digest in sources:
        with sources[digest].open() as reader:
            raw = reader.read()
        if sha256_digest(raw) != digest:
            raise IntegrityError(f"image manifest {digest} does not match its digest")
    else:
        raw = layout.read_blob(digest)
    found = parse_manifest(raw)
    if not isinstance(found, ImageManifest):
        raise ConfigError(f"{digest} is an image index; docker loads one platform's manifest")
    return raw, found


def _inspect_id(exe: str, reference: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [exe, "image", "inspect", "--format", "{{.Id}}", reference],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise StoreError(f"docker does not show {reference} after loading it: {done.stderr.strip()}")
    return done.stdout.strip()
