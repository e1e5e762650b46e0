"""Weight-file checks made at pack time: no pickle unless asked, and well-formed headers.

* Pickle-based formats (``.bin .pt .pth .ckpt .pkl .pickle``) can run code when loaded; pack refuses
  them unless ``--allow-pickle``. Most Hugging Face repos carry safetensors beside them: add
  ``ignore: ["*.bin", "*.pt"]`` to the model's ``hf`` source.
* safetensors headers are validated by the ``safetensors`` library itself (the reference reader):
  the header parses, every tensor's dtype, shape and offsets agree, and the tensors cover the file.
* GGUF headers are read by :func:`check_gguf` (a strict reader of the header only; the ``gguf``
  package's own reader parses every array and takes seconds): magic, version, key/values, tensor
  infos, alignment, and every tensor's bytes inside the file. Type sizes come from the ``gguf``
  package, kept by llama.cpp's authors, so new quantization types are known when it is updated.

Example::

    check_weights(Path("model.safetensors"), "model.safetensors")  # raises UnsafeWeightsError
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from airlock.errors import UnsafeWeightsError

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})
GGUF_MAGIC = b"GGUF"
_MAX_COUNT = 1 << 32
_MAX_STRING = 1 << 30
_MAX_DIMS = 8
# GGUF value types: size in bytes of each fixed-size type; 8 = string, 9 = array.
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def pickle_files(paths: Iterable[str]) -> list[str]:
    return [p for p in paths if Path(p).suffix.lower() in PICKLE_SUFFIXES]


def refuse_pickle(artifact: str, paths: Iterable[str]) -> None:
    found = pickle_files(paths)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise UnsafeWeightsError(
            f"{artifact}: pickle-based files can run code when loaded: {shown}",
            problems=tuple(found),
            hint="ignore them in the spec (ignore: ['*.bin', '*.pt']) or pass --allow-pickle",
        )


def check_weights(path: Path, logical: str) -> None:
    """Check the header of a safetensors or GGUF file; other files pass."""
    suffix = Path(logical).suffix.lower()
    if suffix == ".safetensors":
        check_safetensors(path, logical)
    elif suffix == ".gguf":
        check_gguf(path, logical)


def check_safetensors(path: Path, logical: str) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            fh.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnsafeWeightsError(f"{logical}: not a well-formed safetensors file: {exc}") from exc


class _Reader:
    def __init__(self, fh: BinaryIO, logical: str) -> None:
        self.fh = fh
        self.logical = logical

    def bad(self, why: str) -> UnsafeWeightsError:
        return UnsafeWeightsError(f"{self.logical}: not a well-formed GGUF file: {why}")

    def read(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise self.bad(f"it ends inside its header (at byte {self.fh.tell()})")
        return data

    def u32(self) -> int:
        return int(struct.unpack("<I", self.read(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.read(8))[0])

    def string(self) -> bytes:
        n = self.u64()
        if n > _MAX_STRING:
            raise self.bad(f"a string of {n} bytes")
        return self.read(n)

    def skip_value(self, vtype: int, *, depth: int = 0) -> int | None:
        """Skip a value; return it when it is an unsigned/signed integer (for general.alignment)."""
        if vtype in _FIXED:
            raw = self.read(_FIXED[vtype])
            return int.from_bytes(raw, "little") if vtype in (4, 10, 2, 0) else None
        if vtype == _STRING:
            self.string()
            return None
        if vtype == _ARRAY and depth == 0:
            etype, count = self.u32(), self.u64()
            if count > _MAX_COUNT:
                raise self.bad(f"an array of {count} items")
            if etype in _FIXED:
                self.read(_FIXED[etype] * count)
            else:
                for _ in range(count):
                    self.skip_value(etype, depth=1)
            return None
        raise self.bad(f"unknown value type {vtype}")


def _type_sizes() -> dict[int, tuple[int, int]]:
    from gguf.constants import GGML_QUANT_SIZES

    return {int(k): (int(v[0]), int(v[1])) for k, v in GGML_QUANT_SIZES.items()}


def check_gguf(path: Path, logical: str) -> None:
    with open(path, "rb") as raw:
        size = raw.seek(0, io.SEEK_END)
        raw.seek(0)
        r = _Reader(io.BufferedReader(raw, buffer_size=1 << 20), logical)
        if r.read(4) != GGUF_MAGIC:
            raise r.bad("it does not start with 'GGUF'")
        version = r.u32()
        if version not in (2, 3):
            raise r.bad(f"version {version} (airlock reads versions 2 and 3, little-endian)")
        n_tensors, n_kv = r.u64(), r.u64()
        if n_tensors > 1 << 24 or n_kv > 1 << 24:
            raise r.bad(f"{n_tensors} tensors and {n_kv} keys")
        alignment = 32
        for _ in range(n_kv):
            key = r.string()
            value = r.skip_value(r.u32())
            if key == b"general.alignment":
                if not value or value & (value - 1):
                    raise r.bad(f"general.alignment {value} is not a power of two")
                alignment = value
        sizes = _type_sizes()
        tensors: list[tuple[str, int, int]] = []
        for _ in range(n_tensors):
            name = r.string().decode("utf-8", "replace")
            n_dims = r.u32()
            if not 0 < n_dims <= _MAX_DIMS:
                raise r.bad(f"tensor {name!r} has {n_dims} dimensions")
            elements = 1
            for _ in range(n_dims):
                elements *= r.u64()
            ttype, offset = r.u32(), r.u64()
            if ttype not in sizes:
                raise r.bad(f"tensor {name!r} has unknown type {ttype}")
            block, type_size = sizes[ttype]
            if elements % block:
                raise r.bad(f"tensor {name!r}: {elements} elements are not whole blocks of {block}")
            if offset % alignment:
                raise r.bad(f"tensor {name!r}: offset {offset} is not aligned to {alignment}")
            tensors.append((name, offset, elements // block * type_size))
        header_end = r.fh.tell()
        data_start = -(-header_end // alignment) * alignment
        for name, offset, nbytes in tensors:
            if data_start + offset + nbytes > size:
                raise r.bad(
                    f"tensor {name!r} ends at byte {data_start + offset + nbytes}, past the end of the "
                    f"file ({size} bytes): truncated or damaged"
                )
