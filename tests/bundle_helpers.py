"""Helpers for bundle tests (importable as ``bundle_helpers``): specs, a staging folder, packing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from airlock.bundle.format.sign import KeyPair
from airlock.bundle.staging.pack import PackOptions, PackResult, pack
from airlock.testing.tiny_files import write_gguf, write_model_folder

SMALL_CHUNK = 64 * 1024
CREATED = "2025-01-01T00:00:00Z"


def write_spec(path: Path, data: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass(frozen=True)
class Staging:
    spec: Path
    model_dir: Path
    gguf: Path


def make_staging(root: Path) -> Staging:
    """A spec with a local folder model (vllm) and a GGUF file (llamacpp)."""
    model_dir = write_model_folder(root / "tiny-model", seed=1, hidden=128)
    gguf = write_gguf(root / "tiny.gguf", n=40_000)
    spec = write_spec(
        root / "airlock.yaml",
        {
            "models": [
                {"name": "tiny", "path": "tiny-model", "engine": {"kind": "vllm"}},
                {"name": "smol", "gguf": "tiny.gguf", "engine": {"kind": "llamacpp"}},
            ]
        },
    )
    return Staging(spec, model_dir, gguf)


def do_pack(spec: Path, out: Path, keys: KeyPair | None, **kwargs: object) -> PackResult:
    chunk = kwargs.pop("chunk_size", SMALL_CHUNK)
    assert isinstance(chunk, int)
    options = PackOptions(
        spec_path=spec,
        out=out,
        sign_key=keys.private if keys else None,
        chunk_size=chunk,
        workers=2,
        created=CREATED,
        **kwargs,  # type: ignore[arg-type]
    )
    return pack(options)
