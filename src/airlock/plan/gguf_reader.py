"""Read a GGUF file's metadata and tensor table, never its tensor data.

A small reader rather than the ``gguf`` package from llama.cpp: that package memory-maps the whole
file through numpy to build its reader, and we need only the key/value header and the tensor table
(a few megabytes at most, mostly the tokenizer), with bounds on every length so that a corrupt or
hostile file fails with its name instead of an allocation of gigabytes.

Layout (GGUF v2/v3): ``b"GGUF"``, u32 version, u64 tensor count, u64 key/value count, the key/value
pairs, then per tensor: name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset.

Example::

    gguf = read_gguf(Path("SmolLM2-135M-Instruct.Q4_1.gguf"))
    gguf.metadata["general.architecture"]      # 'llama'
    gguf.metadata["llama.block_count"]         # 30
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from airlock.errors import ModelFactsError

MAX_STRING = 64 * 1024 * 1024
MAX_ARRAY = 16 * 1024 * 1024
MAX_COUNT = 1 << 20

_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}  # fmt: skip
_STRING, _ARRAY = 8, 9

# ggml type id -> (name, elements per block, bytes per block), from ggml.h / ggml.c's type traits.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36), 10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
    28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}  # fmt: skip

MetaValue = int | float | bool | str | list["MetaValue"]


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: str
    nbytes: int


@dataclass(frozen=True)
class GgufFile:
    path: Path
    version: int
    metadata: dict[str, MetaValue]
    tensors: tuple[GgufTensor, ...]

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise ModelFactsError(f"{self.path}: GGUF metadata has no general.architecture")
        return arch

    def arch_int(self, key: str) -> int | None:
        """``{arch}.{key}`` as an int; per-layer arrays (some models) give their maximum."""
        value = self.metadata.get(f"{self.architecture}.{key}")
        if isinstance(value, list):
            ints = [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
            return max(ints) if ints else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Reader:
    def __init__(self, fh: BinaryIO, path: Path) -> None:
        self.fh, self.path = fh, path

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise ModelFactsError(f"{self.path}: GGUF header is truncated")
        return data

    def scalar(self, fmt: str, size: int) -> int | float | bool:
        value: int | float | bool = struct.unpack(fmt, self.take(size))[0]
        return value

    def u32(self) -> int:
        return int(self.scalar("<I", 4))

    def u64(self) -> int:
        return int(self.scalar("<Q", 8))

    def string(self) -> str:
        n = self.u64()
        if n > MAX_STRING:
            raise ModelFactsError(
                f"{self.path}: GGUF string of {n} bytes is implausible; the file is corrupt"
            )
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, depth: int = 0) -> MetaValue:
        if vtype in _SCALARS:
            return self.scalar(*_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY and depth < 2:
            item_type, count = self.u32(), self.u64()
            if count > MAX_ARRAY:
                raise ModelFactsError(f"{self.path}: GGUF array of {count} items is implausible")
            return [self.value(item_type, depth + 1) for _ in range(count)]
        raise ModelFactsError(f"{self.path}: unknown GGUF value type {vtype}")


def read_gguf(path: Path) -> GgufFile:
    """Parse the header and tensor table of one GGUF file."""
    try:
        with path.open("rb") as fh:
            r = _Reader(fh, path)
            if r.take(4) != b"GGUF":
                raise ModelFactsError(f"{path}: not a GGUF file (no GGUF magic)")
            version = r.u32()
            if version not in (2, 3):
                raise ModelFactsError(f"{path}: GGUF version {version} is not supported (2 or 3)")
            n_tensors, n_kv = r.u64(), r.u64()
            if n_tensors > MAX_COUNT or n_kv > MAX_COUNT:
                raise ModelFactsError(
                    f"{path}: GGUF counts ({n_tensors} tensors, {n_kv} keys) are implausible"
                )
            metadata: dict[str, MetaValue] = {}
            for _ in range(n_kv):
                key = r.string()
                metadata[key] = r.value(r.u32())
            tensors = tuple(_tensor(r) for _ in range(n_tensors))
    except OSError as exc:
        raise ModelFactsError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    return GgufFile(path=path, version=version, metadata=metadata, tensors=tensors)


def _tensor(r: _Reader) -> GgufTensor:
    name = r.string()
    n_dims = r.u32()
    if n_dims > 8:
        raise ModelFactsError(f"{r.path}: tensor {name!r} has {n_dims} dimensions; the file is corrupt")
    shape = tuple(r.u64() for _ in range(n_dims))
    type_id = r.u32()
    r.u64()  # offset into the data section
    kind = GGML_TYPES.get(type_id)
    if kind is None:
        raise ModelFactsError(f"{r.path}: tensor {name!r} has unknown ggml type {type_id}")
    type_name, block, block_bytes = kind
    numel = math.prod(shape)
    return GgufTensor(name=name, shape=shape, ggml_type=type_name, nbytes=numel // block * block_bytes)
