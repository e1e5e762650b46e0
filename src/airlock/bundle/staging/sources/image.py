"""Container images as bundle artifacts: resolved to a digest, their OCI blobs carried like any file.

Each ``images:`` entry (or a vllm engine's ``image``) is resolved to the digest of one image manifest
for the target platform, and its blobs (the manifest, the config, every layer, and the index it was
chosen from) are gathered in airlock's image cache, an OCI image layout under ``AIRLOCK_CACHE/images``
that every pack shares: a layer two images share, or that an earlier pack fetched, is there once.
The artifact's files are those blobs named ``blobs/sha256/<hex>``, so the bundle's content addressing
carries a shared layer once and ``--base`` leaves out what the other side already holds; the bytes are
the registry's own, never re-serialized, so the image keeps its upstream digest end to end.

Sources, by transport (``TRANSPORT:WHERE``; a bare reference is a registry's):

- ``docker://`` a registry, read with the OCI distribution API (:mod:`airlock.registry.pull`), no
  daemon; a blob already in the cache is not fetched again, so an interrupted pull resumes.
- ``oci:DIR[:REF]`` and ``oci-archive:FILE[:REF]``: an OCI layout, or a tar of one; read as they are.
- ``docker-archive:FILE`` (``docker save``) and ``docker-daemon:REF``: converted by skopeo into the
  cache (their manifests are made on the way, so the digest is this copy's, and the source says so).

Example::

    collected = collect_image(ImageSpec(ref="vllm/vllm-openai:v0.11.0"), ImageOptions(cache=cache))
    collected.image.digest, collected.image.platform
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from airlock.bundle.format.manifest import ImageInfo, Source
from airlock.bundle.staging.sources.base import Collected, SourceFile
from airlock.common.progress import ProgressSink
from airlock.errors import BundleError, ConfigError
from airlock.registry.oci import (
    Descriptor,
    ImageIndex,
    ImageManifest,
    OciLayout,
    parse_config,
    select_platform,
)
from airlock.spec import IMAGE_TRANSPORTS, ImageSpec

DEFAULT_PLATFORM = "linux/amd64"
# OCI's +gzip/+zstd layers and docker's tar.gzip ones: compressed already, never recompressed by pack
COMPRESSED_LAYER_SUFFIXES = ("+gzip", "+zstd", ".tar.gzip", ".tar.zstd")
DOCKER_HUB = "docker.io"
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


@dataclass(frozen=True)
class ImageOptions:
    cache: Path  # airlock's image cache: an OCI layout shared by every pack
    platform: str = DEFAULT_PLATFORM  # for entries that name none
    base_dir: Path | None = None  # relative archive paths are taken from here (the spec's folder)
    skopeo: str = "skopeo"
    progress: ProgressSink | None = None


@dataclass(frozen=True)
class RegistryRef:
    """A registry reference, normalized as docker does: ``ubuntu:24.04`` is docker.io/library/ubuntu."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_registry_ref(ref: str) -> RegistryRef:
    """Split ``[host[:port]/]repo[:tag][@sha256:...]``; a reference with neither tag nor digest is
    refused, since ``latest`` changes under you and nothing would pin what crosses the gap."""
    rest, _, digest = ref.partition("@")
    if digest and not _DIGEST_RE.match(digest):
        raise ConfigError(f"image {ref!r}: {digest!r} is not a sha256:<64 hex> digest")
    name, tag = rest, None
    slash, colon = rest.rfind("/"), rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise ConfigError(f"image {ref!r}: {tag!r} is not a valid tag")
    if tag is None and not digest:
        raise ConfigError(
            f"image {ref!r} has neither a tag nor a digest",
            hint="name a tag (vllm/vllm-openai:v0.11.0) or a digest (@sha256:...); 'latest' is never implied",
        )
    first, _, remainder = name.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, remainder
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _REPO_RE.match(repository):
        raise ConfigError(f"image {ref!r}: {repository!r} is not a valid repository name")
    return RegistryRef(registry, repository, tag, digest or None)


def _split_transport(ref: str) -> tuple[str, str]:
    transport, sep, where = ref.partition(":")
    if sep and transport in IMAGE_TRANSPORTS:
        return transport, where.removeprefix("//") if transport == "docker" else where
    return "docker", ref


def _path_and_ref(where: str, base_dir: Path | None) -> tuple[Path, str | None]:
    """``FILE[:REF]`` of the oci and oci-archive transports: as skopeo reads them, the path ends at
    the first ``:`` (the image's name may hold more, as in ``app:1``)."""
    path, _, ref_name = where.partition(":")
    ref = ref_name or None
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and base_dir is not None:
        resolved = base_dir / resolved
    if not resolved.exists():
        raise ConfigError(f"image source {resolved} does not exist")
    return resolved, ref


def collect_image(spec: ImageSpec, options: ImageOptions) -> Collected:
    platform = spec.platform or options.platform
    cache = OciLayout.create(options.cache)
    transport, where = _split_transport(spec.ref)
    if transport == "docker":
        from airlock.registry.pull import pull_image, source_target

        ref = parse_registry_ref(where)
        pulled = pull_image(
            source_target(ref.registry, tls_verify=spec.tls_verify),
            ref.repository,
            ref.digest or ref.tag or "",
            cache,
            platform=platform,
            progress=options.progress,
        )
        repository, tag = ref.name, ref.tag
        manifest_desc, index_digest = pulled.manifest, pulled.index_digest
        source = Source(type="image", detail="registry", path=str(ref))
    elif transport in ("oci", "oci-archive"):
        path, name = _path_and_ref(where, options.base_dir)
        manifest_desc, index_digest = _from_layout(
            path, name, platform, cache, archive=transport == "oci-archive"
        )
        repository, tag = _name_and_tag(name or path.name)
        source = Source(type="image", detail=transport, path=str(path))
    else:
        manifest_desc, index_digest = _via_skopeo(transport, where, platform, options)
        if transport == "docker-daemon":
            ref = parse_registry_ref(where)
            repository, tag = ref.name, ref.tag
        else:  # a docker-archive: named after its file, as a repository name may be written
            repository, tag = (
                re.sub(r"[^a-z0-9._-]+", "-", Path(where).stem.lower()).strip("-._") or "image",
                None,
            )
        source = Source(type="image", detail=transport, path=where)
    return _collected(spec.ref, repository, tag, manifest_desc, index_digest, platform, cache, source)


def _name_and_tag(name: str) -> tuple[str, str | None]:
    """An OCI layout's image name (``app:1``, ``team/app``) as a repository and a tag."""
    repository, sep, tag = name.rpartition(":")
    if sep and "/" not in tag and _TAG_RE.match(tag):
        return repository, tag
    return name, None


def _collected(
    reference: str,
    repository: str,
    tag: str | None,
    desc: Descriptor,
    index_digest: str | None,
    platform: str,
    cache: OciLayout,
    source: Source,
) -> Collected:
    manifest = cache.manifest(desc.digest, desc.media_type)
    if not isinstance(manifest, ImageManifest):
        raise BundleError(f"image {reference!r}: {desc.digest} is an index, not an image manifest")
    config = parse_config(cache.read_blob(manifest.config.digest))
    if config.platform.split("/")[:2] != platform.split("/")[:2]:
        raise BundleError(
            f"image {reference!r} is for {config.platform}, not {platform}",
            hint="name the platform the site runs with --platform (or the entry's platform:)",
        )
    runtime = config.config
    env = runtime.env_dict() if runtime else {}
    labels = (runtime.labels if runtime else None) or {}
    digests = [desc.digest, manifest.config.digest, *(layer.digest for layer in manifest.layers)]
    if index_digest is not None:
        digests.append(index_digest)
    compressed = {x.digest for x in manifest.layers if x.media_type.endswith(COMPRESSED_LAYER_SUFFIXES)}
    files: dict[str, SourceFile] = {}
    for digest in digests:
        path = cache.blob_path(digest)
        if not path.is_file():
            raise BundleError(f"image {reference!r}: blob {digest} is missing from {cache.root}")
        hexdigest = digest.removeprefix("sha256:")
        files[hexdigest] = SourceFile(
            f"blobs/sha256/{hexdigest}", path, expected_sha256=hexdigest, compressed=digest in compressed
        )
    info = ImageInfo(
        reference=reference,
        repository=repository,
        tag=tag,
        digest=desc.digest,
        index_digest=index_digest,
        media_type=desc.media_type,
        platform=config.platform,
        config_digest=manifest.config.digest,
        layers=[layer.digest for layer in manifest.layers],
        size=desc.size + manifest.config.size + sum(layer.size for layer in manifest.layers),
        entrypoint=(runtime.entrypoint if runtime else None) or [],
        cmd=(runtime.cmd if runtime else None) or [],
        cuda_version=env.get("CUDA_VERSION"),
        nvidia_require_cuda=env.get("NVIDIA_REQUIRE_CUDA"),
        vllm_version=_vllm_version(repository, env, labels),
    )
    cache.set_ref(desc, f"{repository}@{desc.digest}")
    return Collected(
        kind="image",
        name=reference,
        source=source,
        files=tuple(files.values()),
        image=info,
    )


def _vllm_version(repository: str, env: dict[str, str], labels: dict[str, str]) -> str | None:
    for key in ("VLLM_VERSION", "vllm.version"):
        if key in env or key in labels:
            return env.get(key) or labels.get(key)
    if "vllm" in repository:
        version = labels.get("org.opencontainers.image.version")
        if version:
            return version.removeprefix("v")
    return None


def _chosen(layout: OciLayout, desc: Descriptor, platform: str) -> tuple[Descriptor, str | None]:
    found = layout.manifest(desc.digest, desc.media_type)
    if isinstance(found, ImageIndex):
        return select_platform(found, platform), desc.digest
    return desc, None


def _from_layout(
    path: Path, name: str | None, platform: str, cache: OciLayout, *, archive: bool
) -> tuple[Descriptor, str | None]:
    """An image of an OCI layout folder or archive, its blobs copied (checked) into the cache."""
    if archive:
        with tempfile.TemporaryDirectory(dir=cache.root, prefix=".archive-") as tmp:
            _extract_layout(path, Path(tmp))
            return _from_layout(Path(tmp), name, platform, cache, archive=False)
    layout = OciLayout.open(path)
    refs = layout.refs()
    if name is not None:
        desc = layout.resolve(name)
    elif len(refs) == 1:
        desc = next(iter(refs.values()))
    else:
        raise ConfigError(
            f"{path} holds {len(refs)} named images: say which one (oci:{path}:NAME)",
            hint=f"its names: {', '.join(sorted(refs)) or 'none'}",
        )
    chosen, index_digest = _chosen(layout, desc, platform)
    manifest = layout.manifest(chosen.digest, chosen.media_type)
    if not isinstance(manifest, ImageManifest):
        raise BundleError(f"{path}: {chosen.digest} is an index inside an index, which is not supported")
    needed = [chosen.digest, manifest.config.digest, *(x.digest for x in manifest.layers)]
    if index_digest is not None:
        needed.append(index_digest)
    for digest in needed:
        if not layout.has_blob(digest):
            raise BundleError(f"{path}: blob {digest} of the image is missing (a truncated layout?)")
        with layout.blob_path(digest).open("rb") as reader:
            cache.add_blob_stream(digest, reader, name=f"{path}: blob {digest}")
    return chosen, index_digest


def _extract_layout(archive: Path, dest: Path) -> None:
    """Unpack an oci-archive's regular files under ``dest``; links and paths that leave are refused."""
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                if not member.isfile() and not member.isdir():
                    raise BundleError(f"{archive}: {member.name!r} is not a plain file (links are refused)")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{archive}: not a readable tar archive ({exc})", hint="is it truncated?") from exc
    except tarfile.FilterError as exc:  # pragma: no cover - the check above catches links first
        raise BundleError(f"{archive}: {exc}") from exc


def _via_skopeo(
    transport: str, where: str, platform: str, options: ImageOptions
) -> tuple[Descriptor, str | None]:
    """docker-archive and docker-daemon: skopeo converts the image into the cache (its own digest)."""
    if shutil.which(options.skopeo) is None:
        raise ConfigError(
            f"reading a {transport} image needs skopeo, which is not installed",
            hint="apt-get install skopeo, or give the image as an OCI layout or archive",
        )
    src = where
    if transport == "docker-archive":
        path, _ = _path_and_ref(where, options.base_dir)
        src = str(path)
    with tempfile.TemporaryDirectory(dir=options.cache, prefix=".skopeo-") as tmp:
        run = subprocess.run(
            [options.skopeo, "copy", "--quiet", f"{transport}:{src}", f"oci:{tmp}:image"],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise BundleError(f"skopeo could not read {transport}:{where}: {last}")
        return _from_layout(Path(tmp), "image", platform, OciLayout.open(options.cache), archive=False)
