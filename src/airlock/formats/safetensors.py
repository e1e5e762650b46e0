"""Read a safetensors file's header only: tensor names, dtypes and shapes, never the weights.

The format is an 8-byte little-endian header length, then that many bytes of JSON
(``{"name": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, "__metadata__": {..}}``), then
the raw data. We parse it here rather than with the ``safetensors`` library because:

- ``safe_open`` memory-maps the whole file and needs a framework (numpy/torch) to describe tensors;
  a plan over a 140 GB checkpoint should read a few kilobytes per shard and nothing more;
- the header is a stable, documented 8 + N byte layout, and reading it ourselves lets us bound its
  size (a hostile length cannot make us allocate gigabytes) and name the corrupt file precisely.

Example::

    header = read_header(Path("model-00001-of-00004.safetensors"))
    header.tensors["model.embed_tokens.weight"].shape   # (128256, 4096)
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from airlock.errors import ModelFactsError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation's own limit


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


def read_header(path: Path) -> SafetensorsHeader:
    """Parse one file's header; every defect is a ModelFactsError naming the file."""
    try:
        with path.open("rb") as fh:
            return read_header_from(fh, path)
    except OSError as exc:
        raise ModelFactsError(f"{path}: cannot be read: {exc.strerror or exc}") from exc


def read_header_from(fh: BinaryIO, path: Path) -> SafetensorsHeader:
    """Parse the header of the open file ``fh`` (a local file, or a Hub file read by ranges);
    ``path`` names it in messages. ``fh`` must seek to its end, to tell the data's size."""
    raw_len = fh.read(8)
    if len(raw_len) != 8:
        raise ModelFactsError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
    (length,) = struct.unpack("<Q", raw_len)
    if length == 0 or length > MAX_HEADER_BYTES:
        raise ModelFactsError(
            f"{path}: safetensors header length {length} is out of range (1..{MAX_HEADER_BYTES})"
        )
    raw = fh.read(length)
    file_size = fh.seek(0, 2)
    if len(raw) != length:
        raise ModelFactsError(f"{path}: truncated safetensors header ({len(raw)} of {length} bytes)")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFactsError(f"{path}: safetensors header is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFactsError(f"{path}: safetensors header is not a JSON object")
    data_size = file_size - 8 - length
    metadata_raw = data.pop("__metadata__", None) or {}
    metadata = {str(k): str(v) for k, v in metadata_raw.items()} if isinstance(metadata_raw, dict) else {}
    tensors: dict[str, TensorInfo] = {}
    for name, entry in data.items():
        tensors[name] = _tensor(path, name, entry, data_size)
    return SafetensorsHeader(path=path, tensors=tensors, metadata=metadata)


def _tensor(path: Path, name: str, entry: object, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise ModelFactsError(f"{path}: tensor {name!r} has no dtype/shape entry")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if (
        not isinstance(dtype, str)
        or not isinstance(shape, list)
        or not all(isinstance(d, int) for d in shape)
    ):
        raise ModelFactsError(f"{path}: tensor {name!r} has a malformed dtype or shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise ModelFactsError(f"{path}: tensor {name!r} has malformed data_offsets")
    begin, end = offsets
    if not 0 <= begin <= end or end > data_size:
        # A file cut short in transit shows up here, before anything loads it.
        raise ModelFactsError(
            f"{path}: tensor {name!r} lies past the end of the file (bytes {begin}..{end} of {data_size})",
            hint="the file is truncated or corrupt; fetch it again",
        )
    return TensorInfo(dtype=dtype.upper(), shape=tuple(shape), nbytes=end - begin)
