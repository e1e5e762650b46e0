"""Turn a spec into the artifacts to pack, and check them before a byte is copied.

Models (``hf``, ``path``, ``gguf``), then wheels, then plain files; remote models carry nothing.
Checks: no pickle weights unless allowed; safetensors and GGUF headers well-formed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from airlock.bundle.staging.sources.base import Collected
from airlock.bundle.staging.sources.local import collect_folder, collect_gguf
from airlock.bundle.staging.weights import check_weights, refuse_pickle
from airlock.spec import Spec


@dataclass(frozen=True)
class CollectOptions:
    work_dir: Path  # pack's state folder: pip downloads land here
    allow_pickle: bool = False
    hf_endpoint: str | None = None  # default: HF_ENDPOINT or huggingface.co
    hf_cache: Path | None = None  # default: huggingface_hub's (HF_HUB_CACHE / HF_HOME)
    hf_token: str | None = None  # default: huggingface_hub's (HF_TOKEN, its login)
    pip_python: Path | None = None  # the Python whose pip downloads wheels (default: this one)
    workers: int = 2


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
    check(found, allow_pickle=options.allow_pickle, workers=options.workers)
    return found


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
