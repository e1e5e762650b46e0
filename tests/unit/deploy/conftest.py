"""A store with images installed (as `airlock install --docker/--registry` records them) and specs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from airlock.settings import Settings
from airlock.store.db import ImageTarget, StoreDb, StoredImage
from airlock.store.store import Store
from airlock.testing.tiny_files import write_gguf

LLAMA_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
                "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
                "torch_dtype": "bfloat16"}  # fmt: skip
REGISTRY = "registry.site:5000"


def stored_image(store: Path, reference: str, repository: str, tag: str, targets: list[str]) -> StoredImage:
    """An installed image: its manifest in the store's blobs (config digest readable), placed in targets."""
    config = hashlib.sha256(reference.encode()).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": f"sha256:{config}"}}).encode()
    digest = hashlib.sha256(manifest).hexdigest()
    blob = Store(store).image_blob(digest)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(manifest)
    placed = []
    for kind in targets:
        ref = (
            f"{REGISTRY}/{repository.split('/', 1)[-1]}@sha256:{digest}" if kind == "registry" else reference
        )
        placed.append(ImageTarget(kind=kind, reference=ref, at="t"))
    return StoredImage(
        reference=reference, repository=repository, tag=tag, digest=f"sha256:{digest}",
        media_type="application/vnd.oci.image.manifest.v1+json", platform="linux/amd64", size=len(manifest),
        files=[], bundle="b" * 64, installed="2026-11-30T00:00:00Z", targets=placed,
    )  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", cache=tmp_path / "cache")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with airlock's image loaded into docker, vLLM's in the internal registry, and a GGUF."""
    root = tmp_path / "store"
    s = Store(root)
    s.ensure()
    images = [
        stored_image(root, "airlock:0.1.0", "docker.io/library/airlock", "0.1.0", ["docker"]),
        stored_image(root, "vllm/vllm-openai:v0.11.0", "docker.io/vllm/vllm-openai", "v0.11.0", ["registry"]),
        stored_image(root, "prom/prometheus:v2.53.0", "docker.io/prom/prometheus", "v2.53.0", ["docker"]),
        stored_image(root, "grafana/grafana:11.1.0", "docker.io/grafana/grafana", "11.1.0", ["docker"]),
    ]
    s.save_db(StoreDb(images=images))
    write_gguf(root / "gguf" / "tiny.gguf")
    llama = root / "models" / "llama-8b"
    llama.mkdir(parents=True)
    (llama / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    return root


SpecWriter = Callable[..., Path]


@pytest.fixture
def write_spec(tmp_path: Path, store: Path) -> SpecWriter:
    def write(models: list[dict[str, Any]] | None = None, **top: Any) -> Path:
        data: dict[str, Any] = {"store": str(store), "gateway": {"port": 8000}, **top}
        data["models"] = models if models is not None else [
            {"name": "smollm2", "aliases": ["default"], "gguf": str(store / "gguf" / "tiny.gguf"),
             "engine": {"kind": "llamacpp", "parallel": 2, "ctx_size": 2048}},
        ]  # fmt: skip
        folder = tmp_path / "site"
        folder.mkdir(exist_ok=True)
        path = folder / "airlock.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write
