"""Turn a spec into the artifacts to pack, and check them before a byte is copied.

Models (``hf``, ``path``, ``gguf``), then wheels, then plain files, then container images (``images:``
and each vllm engine's ``image``, once each); remote models carry nothing.
Checks: no pickle weights unless allowed; safetensors and GGUF headers well-formed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from airlock.bundle.staging.sources.base import Collected
from airlock.bundle.staging.sources.local import collect_folder, collect_gguf
from airlock.bundle.staging.weights import check_weights, refuse_pickle
from airlock.common.progress import ProgressSink
from airlock.settings import Settings
from airlock.spec import ImageSpec, Spec


@dataclass(frozen=True)
class CollectOptions:
    work_dir: Path  # pack's state folder: pip downloads land here
    allow_pickle: bool = False
    hf_endpoint: str | None = None  # default: HF_ENDPOINT or huggingface.co
    hf_cache: Path | None = None  # default: huggingface_hub's (HF_HUB_CACHE / HF_HOME)
    hf_token: str | None = None  # default: huggingface_hub's (HF_TOKEN, its login)
    pip_python: Path | None = None  # the Python whose pip downloads wheels (default: this one)
    workers: int = 2
    image_cache: Path | None = None  # default: AIRLOCK_CACHE/images (an OCI layout every pack shares)
    platform: str = "linux/amd64"  # images: the platform taken from a multi-platform index
    spec_dir: Path | None = None  # images: relative archive paths are taken from here
    progress: ProgressSink | None = None


def collect(spec: Spec, options: CollectOptions) -> list[Collected]:
    found: list[Collected] = []
    for model in spec.models:
        if model.hf is not None:
            from airlock.bundle.staging.sources.hf import HubOptions, collect_hf

            found.append(
                collect_hf(
                    model.name,
                    model.hf,
                    HubOptions(
                        endpoint=options.hf_endpoint, cache_dir=options.hf_cache, token=options.hf_token
                    ),
                )
            )
        elif model.path is not None:
            found.append(collect_folder(model.name, model.path))
        elif model.gguf is not None:
            found.append(collect_gguf(model.name, model.gguf))
    if spec.wheels is not None:
        from airlock.bundle.staging.sources.wheels import collect_wheels

        found.append(collect_wheels(spec.wheels, options.work_dir, python=options.pip_python))
    if spec.files:
        from airlock.bundle.staging.sources.files import collect_files

        found.append(collect_files(spec.files))
    images = image_specs(spec)
    if images:
        from airlock.bundle.staging.sources.image import ImageOptions, collect_image

        cache = options.image_cache or Settings.from_env().cache / "images"
        image_options = ImageOptions(
            cache=cache, platform=options.platform, base_dir=options.spec_dir, progress=options.progress
        )
        found.extend(collect_image(image, image_options) for image in images)
    check(found, allow_pickle=options.allow_pickle, workers=options.workers)
    return found


def image_specs(spec: Spec) -> list[ImageSpec]:
    """The spec's images, then each vllm engine's ``image`` the list does not name already."""
    images = list(spec.images)
    named = {image.ref for image in images}
    for model in spec.models:
        ref = getattr(model.engine, "image", None)
        if ref is not None and ref not in named:
            images.append(ImageSpec(ref=ref))
            named.add(ref)
    return images


def check(artifacts: list[Collected], *, allow_pickle: bool, workers: int = 2) -> None:
    """Refuse pickle weights (unless allowed), then check every safetensors and GGUF header."""
    for artifact in artifacts:
        if artifact.kind == "model" and not allow_pickle:
            refuse_pickle(f"model {artifact.name!r}", (f.path for f in artifact.files))
    jobs = [
        (f.origin, f"model {a.name!r}: {f.path}")
        for a in artifacts
        if a.kind == "model"
        for f in a.files
        if f.path.lower().endswith((".safetensors", ".gguf"))
    ]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(lambda job: check_weights(job[0], job[1]), jobs))
