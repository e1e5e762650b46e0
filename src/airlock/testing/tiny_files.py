"""Tiny model files for tests: safetensors (bf16/f16/f32), GGUF, and a whole Hugging Face-like folder.

Written with the standard library and numpy only (no torch), byte for byte in each format's layout.

Example::

    write_safetensors(tmp / "model.safetensors", {"w": ("BF16", [64, 64])}, seed=1)
    write_gguf(tmp / "tiny.gguf", n=64)
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_DTYPES = {"BF16": 2, "F16": 2, "F32": 4, "I8": 1}


def safetensors_bytes(
    tensors: dict[str, tuple[str, list[int]]], *, seed: int = 0, trained: bool = True
) -> bytes:
    """A safetensors file. ``trained`` draws values like trained weights (small, normal), so their
    high bytes repeat and compress, as real checkpoints do; otherwise the bytes are uniform noise."""
    rng = np.random.default_rng(seed)
    header: dict[str, object] = {}
    blobs = []
    offset = 0
    for name, (dtype, shape) in tensors.items():
        count = int(np.prod(shape)) if shape else 1
        if dtype in ("BF16", "F16", "F32") and trained:
            values = rng.normal(0, 0.02, count).astype(np.float32)
            if dtype == "BF16":
                raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
            elif dtype == "F16":
                raw = values.astype("<f2").tobytes()
            else:
                raw = values.astype("<f4").tobytes()
        else:
            raw = rng.integers(0, 256, count * _DTYPES[dtype], dtype=np.uint8).tobytes()
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], *, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(safetensors_bytes(tensors, seed=seed))
    return path


def _gguf_string(s: str) -> bytes:
    data = s.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_bytes(
    n: int = 64, *, name: str = "w", version: int = 3, alignment: int = 32, truncate: int = 0
) -> bytes:
    """A GGUF file with one key (general.name) and one F32 tensor of ``n`` values."""
    out = b"GGUF" + struct.pack("<I", version) + struct.pack("<QQ", 1, 2)
    out += _gguf_string("general.name") + struct.pack("<I", 8) + _gguf_string("tiny")
    out += _gguf_string("general.alignment") + struct.pack("<I", 4) + struct.pack("<I", alignment)
    out += (
        _gguf_string(name)
        + struct.pack("<I", 1)
        + struct.pack("<Q", n)
        + struct.pack("<I", 0)
        + struct.pack("<Q", 0)
    )
    out += b"\x00" * (-len(out) % alignment)
    out += np.arange(n, dtype="<f4").tobytes()
    return out[: len(out) - truncate] if truncate else out


def write_gguf(path: Path, n: int = 64, *, version: int = 3, alignment: int = 32, truncate: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gguf_bytes(n, version=version, alignment=alignment, truncate=truncate))
    return path


def model_files(*, seed: int = 0, hidden: int = 64) -> dict[str, bytes]:
    """The files of a tiny Hugging Face model repo (not loadable by transformers; for packing)."""
    return {
        "config.json": json.dumps({"model_type": "llama", "hidden_size": hidden, "seed": seed}).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE"}}).encode(),
        "model.safetensors": safetensors_bytes(
            {"embed.weight": ("BF16", [128, hidden]), "norm.weight": ("F32", [hidden])}, seed=seed
        ),
        "README.md": b"---\nlicense: apache-2.0\n---\n# tiny\n",
    }


def write_model_folder(path: Path, *, seed: int = 0, hidden: int = 64) -> Path:
    for rel, data in model_files(seed=seed, hidden=hidden).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    return path
