"""Read a GGUF file's metadata and tensor table, never its tensor data.

A small reader rather than the ``gguf`` package's ``GGUFReader``: that memory-maps the whole file
through numpy, and we need only the key/value header and the tensor table (a few megabytes at most,
mostly the tokenizer), with bounds on every length so that a corrupt or hostile file fails with its
name instead of an allocation of gigabytes. The block sizes of the quantization types come from the
``gguf`` package's constants (kept by llama.cpp's authors), so new types are known when it updates.
Used by ``airlock plan`` (model facts) and by ``airlock pack`` (every tensor inside the file).

Layout (GGUF v2/v3): ``b"GGUF"``, u32 version, u64 tensor count, u64 key/value count, the key/value
pairs, then per tensor: name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset.

Example::

    gguf = read_gguf(Path("SmolLM2-135M-Instruct.Q4_1.gguf"))
    gguf.metadata["general.architecture"]      # 'llama'
    gguf.metadata["llama.block_count"]         # 30
"""

from __future__ import annotations

import functools
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


@functools.cache
def ggml_types() -> dict[int, tuple[str, int, int]]:
    """ggml type id -> (name, elements per block, bytes per block).

    Read on first use: importing ``gguf`` pulls in numpy (a quarter of a second), which the CLI's
    start-up and every command that reads no GGUF file should not pay.
    """
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return {int(t): (GGMLQuantizationType(t).name, int(b), int(n)) for t, (b, n) in GGML_QUANT_SIZES.items()}


DEFAULT_ALIGNMENT = 32

MetaValue = int | float | bool | str | list["MetaValue"]


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: str
    nbytes: int
    offset: int = 0  # from the start of the data section
    whole_blocks: bool = True  # the element count is a whole number of the type's blocks


@dataclass(frozen=True)
class GgufFile:
    path: Path
    version: int
    metadata: dict[str, MetaValue]
    tensors: tuple[GgufTensor, ...]
    data_start: int = 0  # byte where the data section starts (the header's end, aligned)
    size: int = 0  # the file's size in bytes

    @property
    def alignment(self) -> int:
        value = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

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
            raise ModelFactsError(f"{self.path}: GGUF header is truncated (the file ends inside it)")
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
            return read_gguf_from(fh, path)
    except OSError as exc:
        raise ModelFactsError(f"{path}: cannot be read: {exc.strerror or exc}") from exc


def read_gguf_from(fh: BinaryIO, path: Path) -> GgufFile:
    """Parse the header and tensor table of the open file ``fh`` (a local file, or a Hub file read by
    ranges); ``path`` names it in messages."""
    r = _Reader(fh, path)
    if r.take(4) != b"GGUF":
        raise ModelFactsError(f"{path}: not a GGUF file (it does not start with 'GGUF')")
    version = r.u32()
    if version not in (2, 3):
        raise ModelFactsError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = r.u64(), r.u64()
    if n_tensors > MAX_COUNT or n_kv > MAX_COUNT:
        raise ModelFactsError(f"{path}: GGUF counts ({n_tensors} tensors, {n_kv} keys) are implausible")
    metadata: dict[str, MetaValue] = {}
    for _ in range(n_kv):
        key = r.string()
        metadata[key] = r.value(r.u32())
    tensors = tuple(_tensor(r) for _ in range(n_tensors))
    header_end = fh.tell()
    size = fh.seek(0, 2)
    gguf = GgufFile(path=path, version=version, metadata=metadata, tensors=tensors, size=size)
    align = gguf.alignment
    if align <= 0 or align & (align - 1):
        raise ModelFactsError(
            f"{path}: general.alignment {metadata.get('general.alignment')!r} is not a power of two"
        )
    return GgufFile(path, version, metadata, tensors, data_start=-(-header_end // align) * align, size=size)


def _tensor(r: _Reader) -> GgufTensor:
    name = r.string()
    n_dims = r.u32()
    if n_dims > 8:
        raise ModelFactsError(f"{r.path}: tensor {name!r} has {n_dims} dimensions; the file is corrupt")
    shape = tuple(r.u64() for _ in range(n_dims))
    type_id = r.u32()
    offset = r.u64()
    kind = ggml_types().get(type_id)
    if kind is None:
        raise ModelFactsError(f"{r.path}: tensor {name!r} has unknown ggml type {type_id}")
    type_name, block, block_bytes = kind
    numel = math.prod(shape)
    return GgufTensor(
        name=name, shape=shape, ggml_type=type_name, nbytes=numel // block * block_bytes, offset=offset,
        whole_blocks=numel % block == 0,
    )  # fmt: skip
