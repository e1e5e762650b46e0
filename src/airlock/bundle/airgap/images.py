"""Where an install puts its container images: an internal registry, the local docker, an OCI layout.

The images are in the store first (its OCI layout, ``STORE/images``, verified blob by blob as the
install copied them); from there each target gets them with their digests unchanged:

- ``--registry HOST:PORT``: pushed over the distribution API (blobs first, the manifest last; blobs
  the registry has are skipped, so a rerun after a failure pushes only what is missing), as
  ``HOST:PORT/<repository without its registry>[:tag]``; the reference recorded is by digest.
- ``--docker``: streamed into ``docker load`` and tagged with the reference the spec named, so an
  engine's ``image: vllm/vllm-openai:v0.11.0`` runs as written; the image ID is its config digest.
- ``--oci DIR``: an OCI image layout for other runtimes (podman, containerd, a registry's importer).

Each placement is recorded in the store's index (``StoredImage.targets``): ``airlock ls`` shows it,
and serve runs an engine's ``image`` from where it was installed (``StoreDb.image_location``).

Example::

    placed = place_images(store, db.images, ImageTargets(registry=RegistryTarget("reg.site:5000")))
    placed[0].targets[0].reference   # reg.site:5000/vllm/vllm-openai@sha256:...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from airlock.bundle.format.manifest import utc_now
from airlock.common.progress import ProgressSink
from airlock.registry.oci import Descriptor, OciLayout
from airlock.registry.push import RegistryTarget
from airlock.store.db import ImageTarget, StoredImage
from airlock.store.store import Store


@dataclass(frozen=True)
class ImageTargets:
    registry: RegistryTarget | None = None
    docker: bool = False
    docker_host: str | None = None  # default: DOCKER_HOST or the local socket
    oci: Path | None = None

    @property
    def any(self) -> bool:
        return self.registry is not None or self.docker or self.oci is not None


@dataclass(frozen=True)
class PlacedImage:
    reference: str  # as the spec named it
    digest: str
    targets: list[ImageTarget] = field(default_factory=list)
    pushed_blobs: int = 0
    skipped_blobs: int = 0  # already in the registry
    bytes_sent: int = 0


def internal_repository(image: StoredImage) -> str:
    """The repository path on the site's registry: upstream's, without its registry host."""
    return image.repository.split("/", 1)[1] if "/" in image.repository else image.repository


def docker_tag(image: StoredImage) -> str:
    """The name ``docker load`` gives it: the spec's reference where it has a tag, else repo:sha256-<hex12>."""
    name = image.repository.removeprefix("docker.io/").removeprefix("library/")
    return f"{name}:{image.tag}" if image.tag else f"{name}:sha256-{image.digest[7:19]}"


def place_images(
    store: Store,
    images: Sequence[StoredImage],
    targets: ImageTargets,
    *,
    progress: ProgressSink | None = None,
) -> list[PlacedImage]:
    layout = OciLayout.open(store.images)
    placed = []
    for image in images:
        done: list[ImageTarget] = []
        pushed = skipped = sent = 0
        if targets.registry is not None:
            from airlock.registry.push import layout_image, push_image

            data, media_type, blobs = layout_image(layout, image.digest)
            result = push_image(
                targets.registry,
                internal_repository(image),
                image.tag,
                data,
                media_type,
                blobs,
                progress=progress,
            )
            pushed, skipped, sent = result.pushed_blobs, result.skipped_blobs, result.bytes_sent
            done.append(ImageTarget(kind="registry", reference=result.reference, at=utc_now()))
        if targets.docker:
            from airlock.registry.docker_load import docker_load

            (loaded,) = docker_load(
                layout, [(image.digest, docker_tag(image))], docker_host=targets.docker_host
            )
            done.append(ImageTarget(kind="docker", reference=loaded, at=utc_now()))
        if targets.oci is not None:
            done.append(ImageTarget(kind="oci", reference=_to_oci(layout, image, targets.oci), at=utc_now()))
        placed.append(PlacedImage(image.reference, image.digest, done, pushed, skipped, sent))
    return placed


def _to_oci(store_layout: OciLayout, image: StoredImage, out: Path) -> str:
    target = OciLayout.create(out)
    for f in image.files:
        target.add_blob(f"sha256:{f.sha256}", store_layout.blob_path(f"sha256:{f.sha256}"))
    manifest = next(f for f in image.files if f"sha256:{f.sha256}" == image.digest)
    target.set_ref(
        Descriptor(media_type=image.media_type, digest=image.digest, size=manifest.size), image.ref_name
    )
    return f"{out}:{image.ref_name}"


def record_targets(store: Store, placed: Sequence[PlacedImage]) -> None:
    """Add each placement to the store's index (a target of the same kind is replaced)."""
    db = store.load_db()
    by_ref = {p.reference: p for p in placed}
    images = []
    for image in db.images:
        new = by_ref.get(image.reference)
        if new is not None and new.digest == image.digest:
            kinds = {t.kind for t in new.targets}
            image = image.model_copy(
                update={"targets": [t for t in image.targets if t.kind not in kinds] + new.targets}
            )
        images.append(image)
    store.save_db(db.model_copy(update={"images": images}))
