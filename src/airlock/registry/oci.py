"""OCI image wire types and the OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/``).

The models read what registries and layouts hold: descriptors, image manifests (OCI and Docker
schema 2), image indexes (OCI and Docker manifest lists), and the fields of an image config that
airlock reads. Unknown fields are kept out of the way (ignored), since images carry annotations and
fields newer than this code; the bytes that count are the blobs themselves, never re-serialized.

:class:`OciLayout` opens or creates a layout, places blobs (a hard link when the source is on the same
file system, else a copy checked against its digest; each placement atomic) and names images in
``index.json`` (``org.opencontainers.image.ref.name``). Every digest is checked as ``sha256:<64 hex>``
before it becomes a path, so no digest can name a file outside ``blobs/``.

Example::

    layout = OciLayout.create(out)
    layout.add_blob(digest, path_in_store)
    layout.set_ref(Descriptor(media_type=OCI_MANIFEST, digest=digest, size=n), "vllm-openai:v0.11.0")
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from pathlib import Path
from typing import IO, Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airlock.common.fileio import BUF, fsync_dir, full_disk_named, temp_name, write_atomic
from airlock.errors import ConfigError, IntegrityError, StoreError, UnsafePathError

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_LIST})
REF_NAME: Final = "org.opencontainers.image.ref.name"

DIGEST_RE: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
Digest = Annotated[str, Field(pattern=DIGEST_RE.pattern)]


def check_digest(digest: str) -> str:
    """Return the hex part of ``digest``; refuse anything but ``sha256:<64 lowercase hex>``."""
    if not isinstance(digest, str) or DIGEST_RE.match(digest) is None:
        raise UnsafePathError(
            f"{digest!r} is not a sha256:<64 hex> digest",
            hint="image blobs are named by their SHA-256 only; the manifest or index that named it is damaged",
        )
    return digest[len("sha256:") :]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Wire(BaseModel):
    """An OCI wire type: camelCase names, unknown fields ignored, parsed values immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Platform(_Wire):
    architecture: str
    os: str
    variant: str | None = None

    @property
    def name(self) -> str:
        """``os/arch`` or ``os/arch/variant``, as ``--platform`` takes it."""
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


class Descriptor(_Wire):
    media_type: str = Field(alias="mediaType")
    digest: Digest
    size: int = Field(ge=0)
    platform: Platform | None = None
    annotations: dict[str, str] | None = None

    def wire(self) -> dict[str, object]:
        """The descriptor as JSON-ready data, with OCI's field names and no empty fields."""
        return self.model_dump(by_alias=True, exclude_none=True)


class ImageManifest(_Wire):
    schema_version: int = Field(alias="schemaVersion")
    media_type: str | None = Field(None, alias="mediaType")
    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str] | None = None


class ImageIndex(_Wire):
    schema_version: int = Field(alias="schemaVersion")
    media_type: str | None = Field(None, alias="mediaType")
    manifests: list[Descriptor]
    annotations: dict[str, str] | None = None


class RuntimeConfig(_Wire):
    env: list[str] | None = Field(None, alias="Env")
    entrypoint: list[str] | None = Field(None, alias="Entrypoint")
    cmd: list[str] | None = Field(None, alias="Cmd")
    labels: dict[str, str] | None = Field(None, alias="Labels")

    def env_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.env or []:
            key, _, value = item.partition("=")
            out[key] = value
        return out


class ImageConfig(_Wire):
    """The fields of an image config that airlock reads (the rest stays in the blob)."""

    architecture: str
    os: str
    variant: str | None = None
    config: RuntimeConfig | None = None

    @property
    def platform(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


def parse_manifest(data: bytes, media_type: str | None = None) -> ImageManifest | ImageIndex:
    """An image manifest or an index, by its ``mediaType`` (given, or in the JSON; an index without
    one is told by its ``manifests`` list)."""
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        kind = media_type or raw.get("mediaType")
        if kind in INDEX_TYPES or (kind is None and "manifests" in raw):
            return ImageIndex.model_validate(raw)
        if kind is not None and kind not in MANIFEST_TYPES:
            raise ValueError(f"media type {kind} is not an image manifest or index")
        return ImageManifest.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        raise IntegrityError(
            f"an image manifest does not parse: {str(exc).splitlines()[0]}",
            hint="the image's manifest blob is damaged or not an OCI/Docker image manifest",
        ) from exc


def parse_config(data: bytes) -> ImageConfig:
    try:
        return ImageConfig.model_validate_json(data)
    except ValidationError as exc:
        raise IntegrityError(
            f"an image config does not parse: {str(exc).splitlines()[0]}",
            hint="the image's config blob is damaged or not an image config",
        ) from exc


def _platform_matches(have: Platform, want: str) -> bool:
    parts = want.split("/")
    if len(parts) == 3:
        return have.name == want
    return have.os == parts[0] and have.architecture == parts[1]


def select_platform(index: ImageIndex, platform: str) -> Descriptor:
    """The manifest of ``platform`` (``os/arch`` or ``os/arch/variant``) in ``index``; without a
    variant, the first entry of that OS and architecture."""
    if not re.fullmatch(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?", platform):
        raise ConfigError(f"platform {platform!r} is not OS/ARCH or OS/ARCH/VARIANT", hint="e.g. linux/amd64")
    for desc in index.manifests:
        if desc.platform is not None and _platform_matches(desc.platform, platform):
            return desc
    have = sorted({d.platform.name for d in index.manifests if d.platform is not None})
    raise ConfigError(
        f"the image index has no {platform} image (it has: {', '.join(have) or 'no platforms named'})",
        hint="choose one of its platforms with --platform",
    )


def _link_or_copy(digest: str, src: Path, dst: Path) -> None:
    """Place ``src`` at ``dst`` atomically: a hard link where possible, else a copy checked against
    ``digest`` as it is written."""
    tmp = dst.with_name(temp_name(dst.name))
    try:
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            with src.open("rb") as reader:
                _copy_checked(digest, reader, tmp, name=str(src))
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _copy_checked(digest: str, reader: IO[bytes], tmp: Path, *, name: str) -> None:
    h = hashlib.sha256()
    with full_disk_named(tmp.parent), tmp.open("xb") as out:
        while chunk := reader.read(BUF):
            h.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    got = "sha256:" + h.hexdigest()
    if got != digest:
        raise IntegrityError(
            f"{name}: blob {digest} has SHA-256 {got}",
            hint="the blob is corrupt; run `airlock verify` on the bundle, or rebuild the damaged volume",
        )


class OciLayout:
    """An OCI image layout on disk. :meth:`open` needs one; :meth:`create` makes one if missing."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"

    @classmethod
    def open(cls, root: Path) -> OciLayout:
        marker = root / "oci-layout"
        try:
            version = json.loads(marker.read_bytes()).get("imageLayoutVersion")
        except (OSError, ValueError, AttributeError) as exc:
            raise StoreError(
                f"{root} is not an OCI image layout (no readable oci-layout file)",
                hint="give the folder that holds oci-layout, index.json and blobs/",
            ) from exc
        if not isinstance(version, str) or not version.startswith("1."):
            raise StoreError(f"{root}: OCI image layout version {version!r} is not 1.x")
        return cls(root)

    @classmethod
    def create(cls, root: Path) -> OciLayout:
        """Open the layout at ``root``, creating an empty one (and the folder) if there is none."""
        if (root / "oci-layout").exists():
            return cls.open(root)
        if root.exists() and any(root.iterdir()):
            raise StoreError(
                f"{root} is not empty and not an OCI image layout", hint="give an empty or new folder"
            )
        layout = cls(root)
        with full_disk_named(root):
            layout.blobs.mkdir(parents=True, exist_ok=True)
            write_atomic(root / "index.json", _dump({"schemaVersion": 2, "manifests": []}))
            write_atomic(root / "oci-layout", _dump({"imageLayoutVersion": "1.0.0"}))
        return layout

    def blob_path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def add_blob(self, digest: str, src: Path) -> Path:
        """Place the file ``src`` as blob ``digest`` (kept if already there); return its path."""
        dst = self.blob_path(digest)
        if not dst.is_file():
            self.blobs.mkdir(parents=True, exist_ok=True)
            _link_or_copy(digest, src, dst)
        return dst

    def add_blob_stream(self, digest: str, reader: IO[bytes], *, name: str | None = None) -> Path:
        """Write the bytes of ``reader`` as blob ``digest``, checked as they stream (an
        :class:`~airlock.errors.IntegrityError` leaves nothing behind)."""
        dst = self.blob_path(digest)
        if dst.is_file():
            return dst
        self.blobs.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(temp_name(dst.name))
        try:
            _copy_checked(digest, reader, tmp, name=name or digest)
            os.replace(tmp, dst)
            fsync_dir(dst.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return dst

    def add_blob_bytes(self, data: bytes) -> str:
        """Store ``data`` (a manifest, a config) as a blob; return its digest."""
        digest = sha256_digest(data)
        dst = self.blob_path(digest)
        if not dst.is_file():
            write_atomic(dst, data)
        return digest

    def read_blob(self, digest: str) -> bytes:
        """A small blob's bytes (a manifest, an index, a config), checked against its digest."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"{self.root}: blob {digest} is missing") from exc
        if sha256_digest(data) != digest:
            raise IntegrityError(f"{self.root}: blob {digest} does not match its digest")
        return data

    def _index(self) -> ImageIndex:
        try:
            return ImageIndex.model_validate_json((self.root / "index.json").read_bytes())
        except (OSError, ValidationError) as exc:
            raise StoreError(
                f"{self.root}/index.json is missing or does not parse", hint="the OCI layout is damaged"
            ) from exc

    def refs(self) -> dict[str, Descriptor]:
        """Each named image or index of the layout by its ``org.opencontainers.image.ref.name``."""
        return {
            d.annotations[REF_NAME]: d
            for d in self._index().manifests
            if d.annotations and REF_NAME in d.annotations
        }

    def resolve(self, ref_name: str) -> Descriptor:
        refs = self.refs()
        if ref_name not in refs:
            raise StoreError(
                f"{self.root} has no image named {ref_name!r} (it has: {', '.join(sorted(refs)) or 'none'})",
                hint="name one of the layout's images",
            )
        return refs[ref_name]

    def set_ref(self, descriptor: Descriptor, ref_name: str) -> None:
        """Name ``descriptor`` ``ref_name`` in index.json (atomically), replacing an older image of
        that name; its blob must be in the layout already."""
        if not self.has_blob(descriptor.digest):
            raise StoreError(
                f"{self.root}: cannot name {ref_name!r}: blob {descriptor.digest} is not in the layout"
            )
        path = self.root / "index.json"
        self._index()  # refuses a damaged index.json before rewriting it
        raw: dict[str, Any] = json.loads(path.read_bytes())
        entries: list[dict[str, Any]] = raw.get("manifests") or []
        kept = [m for m in entries if (m.get("annotations") or {}).get(REF_NAME) != ref_name]
        entry = descriptor.wire()
        entry["annotations"] = {**(descriptor.annotations or {}), REF_NAME: ref_name}
        raw["manifests"] = [*kept, entry]
        raw.setdefault("schemaVersion", 2)
        write_atomic(path, _dump(raw))

    def manifest(self, digest: str, media_type: str | None = None) -> ImageManifest | ImageIndex:
        return parse_manifest(self.read_blob(digest), media_type)

    def image_for(self, ref_name: str, platform: str = "linux/amd64") -> Descriptor:
        """The image manifest a name stands for: itself, or the ``platform`` entry of its index."""
        desc = self.resolve(ref_name)
        found = self.manifest(desc.digest, desc.media_type)
        if isinstance(found, ImageIndex):
            return select_platform(found, platform)
        return desc


def _dump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
