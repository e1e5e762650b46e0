"""Optional zstd compression of blobs, with bf16/fp16 bytes grouped by significance first.

A compressed blob is stored as a sequence of independent zstd frames, each the compression of one
``chunk`` of raw bytes (the last may be shorter). Independent frames let parts be cut between frames
(each part decompresses on its own, straight into its place in the store), and let frames be
compressed on every core. The stored size of every frame is in the manifest (``Blob.frames``).

Byte grouping (``group=2``): the bytes of 16-bit values are split into two streams, all the high
bytes (sign and exponent, which repeat a lot in trained weights) then all the low bytes (mostly
noise), before zstd. The ZipNN paper (Hershcovitch et al., 2024) reports ~33% saved on BF16 models
this way against far less without grouping; ``benchmarks/bundle_throughput.py`` measures it here. A
safetensors file whose tensors are mostly BF16/F16 gets ``group=2``; other files ``group=1``.

``--compress zstd`` compresses every blob; ``auto`` compresses a blob only if a sample of it shrinks
by at least 10%. The default is ``none``: on a machine where zstd is slower than the medium, it
costs more time than it saves (see the benchmark's numbers).

Example::

    encoded = encode_blobs([RawBlob(sha, path, size, "m/model.safetensors")], tmp_dir, mode="zstd", workers=2)
    encoded[sha].path, encoded[sha].blob.frames
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import zstandard

from airlock.bundle.format.manifest import Blob, Entry
from airlock.common.fileio import (
    DEFAULT_DISK,
    Disk,
    OnBytes,
    full_disk_named,
    read_ranges,
    temp_name,
)
from airlock.common.progress import Meter, ProgressSink
from airlock.errors import IntegrityError, SourceError

FRAME_RAW = 16 * 1024 * 1024
LEVEL = 1
# Weights have few long repeats: their high bytes are low-entropy, their low bytes noise. A small
# hash table (2^8) and long minimum match (7) leave zstd mostly entropy-coding, which on grouped
# bf16 here is ~2x faster than level 1's defaults and a little smaller (33% saved vs 32%).
_PARAMS = {"min_match": 7, "search_log": 1, "hash_log": 8}


@dataclass(frozen=True)
class Frame:
    raw: int  # raw bytes it decompresses to
    stored: int  # its bytes on the volume


@dataclass(frozen=True)
class RawBlob:
    """A blob to compress: its hash, where its raw bytes are, and its logical name (picks the grouping)."""

    sha256: str
    path: Path
    size: int
    name: str  # "artifact/path": a ``.safetensors`` name may get byte grouping


@dataclass(frozen=True)
class Encoded:
    """A compressed blob: its manifest record, the file of its frames, and each frame's sizes."""

    blob: Blob
    path: Path
    frames: tuple[Frame, ...]


def compressor() -> zstandard.ZstdCompressor:
    """The zstd compressor every frame is written with (frames are plain zstd: any zstd reads them)."""
    params = zstandard.ZstdCompressionParameters.from_level(LEVEL, write_content_size=True, **_PARAMS)
    return zstandard.ZstdCompressor(compression_params=params)


AUTO_MIN_SAVING = 0.10
_SAMPLE = 4 * 1024 * 1024


def group_bytes(data: bytes | memoryview, group: int) -> bytes:
    """[b0 b1 b0 b1 ...] -> [b1 b1 ... b0 b0 ...]: most significant bytes first (little-endian values).

    A trailing partial value (``len(data) % group`` bytes) is appended as it is.
    """
    if group == 1:
        return bytes(data)
    import numpy as np

    whole = len(data) - len(data) % group
    arr = np.frombuffer(data, dtype=np.uint8, count=whole)
    return b"".join(arr[i::group].tobytes() for i in reversed(range(group))) + bytes(data[whole:])


def ungroup_bytes(data: bytes, group: int) -> bytes:
    if group == 1:
        return data
    import numpy as np

    whole = len(data) - len(data) % group
    n = whole // group
    src = np.frombuffer(data, dtype=np.uint8, count=whole)
    out = np.empty(whole, dtype=np.uint8)
    for i in range(group):
        out[i::group] = src[(group - 1 - i) * n : (group - i) * n]
    return out.tobytes() + data[whole:]


def safetensors_group(path: Path) -> int:
    """2 if most tensor bytes of a safetensors file are BF16/F16, else 1."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100 * 1024 * 1024:
                return 1
            header = json.loads(fh.read(n))
    except (OSError, ValueError, struct.error):
        return 1
    sizes: dict[str, int] = {}
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        begin, end = info.get("data_offsets", [0, 0])
        sizes[info.get("dtype", "")] = sizes.get(info.get("dtype", ""), 0) + int(end) - int(begin)
    total = sum(sizes.values())
    half = sizes.get("BF16", 0) + sizes.get("F16", 0)
    return 2 if total and half * 2 > total else 1


def _group_for(logical: str, origin: Path) -> int:
    return safetensors_group(origin) if logical.lower().endswith(".safetensors") else 1


def _frames_of(origin: Path, size: int, chunk: int) -> Iterator[bytes]:
    buf = bytearray()
    for data in read_ranges(origin, 0, size):
        buf += data
        while len(buf) >= chunk:
            yield bytes(buf[:chunk])
            del buf[:chunk]
    if buf or size == 0:
        yield bytes(buf)


def _compress_frame(raw: bytes, group: int) -> bytes:
    return compressor().compress(group_bytes(raw, group))


def worth_it(origin: Path, size: int, group: int) -> bool:
    """Does a sample from the middle of the file shrink by AUTO_MIN_SAVING?"""
    length = min(size, _SAMPLE)
    if length == 0:
        return False
    start = max(0, size // 2 - length // 2)
    sample = b"".join(bytes(d) for d in read_ranges(origin, start, length))
    return len(_compress_frame(sample, group)) <= length * (1 - AUTO_MIN_SAVING)


def encode_one(
    sha: str,
    origin: Path,
    size: int,
    group: int,
    out: Path,
    *,
    pool: ThreadPoolExecutor,
    disk: Disk,
    on_bytes: OnBytes,
    frame: int = FRAME_RAW,
) -> Encoded:
    """Compress ``origin`` into ``out`` (atomically) and check the raw bytes hash to ``sha``."""
    check = hashlib.sha256()
    frames: list[Frame] = []
    tmp = out.with_name(temp_name(out.name))
    try:
        with full_disk_named(out):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                pos = 0

                def job(raw: bytes) -> tuple[int, bytes]:
                    check_len = len(raw)
                    return check_len, _compress_frame(raw, group)

                raws = _frames_of(origin, size, frame)

                def hashed() -> Iterator[bytes]:
                    for raw in raws:
                        check.update(raw)
                        yield raw

                for raw_len, stored in pool.map(job, hashed()):
                    disk.write(fd, memoryview(stored), pos)
                    pos += len(stored)
                    frames.append(Frame(raw=raw_len, stored=len(stored)))
                    on_bytes(raw_len)
                os.fsync(fd)
            finally:
                os.close(fd)
            if check.hexdigest() != sha:
                raise SourceError(f"{origin} changed while it was being compressed", hint="run pack again")
            os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    blob = Blob(
        sha256=sha, size=size, encoding="zstd", chunk=frame, group=group,
        frames=[f.stored for f in frames],
    )  # fmt: skip
    return Encoded(blob, out, tuple(frames))


def encode_blobs(
    blobs: list[RawBlob],
    tmp_dir: Path,
    *,
    mode: Literal["zstd", "auto"],
    workers: int,
    disk: Disk = DEFAULT_DISK,
    progress: ProgressSink | None = None,
    frame: int = FRAME_RAW,
) -> dict[str, Encoded]:
    """Compress each blob that pays; the rest stays raw (not returned).

    Finished encodings are kept in ``tmp_dir`` (``<sha256>.zst`` and its frame list), so a re-run
    after an interruption does not compress them again.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Encoded] = {}
    chosen: list[tuple[RawBlob, int]] = []  # with its byte grouping
    for raw in blobs:
        group = _group_for(raw.name, raw.path)
        if mode == "auto" and not worth_it(raw.path, raw.size, group):
            continue
        chosen.append((raw, group))
    meter = Meter(progress, "compress", sum(raw.size for raw, _ in chosen))
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="zstd") as pool:
            for raw, group in chosen:
                out = tmp_dir / f"{raw.sha256}.zst"
                meta = tmp_dir / f"{raw.sha256}.zst.json"
                cached = _load_meta(meta, out, raw, frame)
                if cached is not None:
                    results[raw.sha256] = cached
                    meter(raw.size)
                    continue
                encoded = encode_one(
                    raw.sha256, raw.path, raw.size, group, out,
                    pool=pool, disk=disk, on_bytes=meter, frame=frame,
                )  # fmt: skip
                meta.write_text(encoded.blob.model_dump_json())
                results[raw.sha256] = encoded
    finally:
        meter.finish()
    return results


def _load_meta(meta: Path, out: Path, raw: RawBlob, frame: int) -> Encoded | None:
    """An encoding an earlier run finished, if its record still matches the blob and its file."""
    try:
        blob = Blob.model_validate_json(meta.read_text())
    except (OSError, ValueError):
        return None
    if blob.sha256 != raw.sha256 or blob.size != raw.size or blob.chunk != frame or not out.is_file():
        return None
    if out.stat().st_size != blob.stored_size:
        return None
    chunk, size = blob.chunk, raw.size
    frames = tuple(Frame(raw=min(chunk, size - i * chunk), stored=s) for i, s in enumerate(blob.frames))
    return Encoded(blob, out, frames)


# -- the air-gapped side ------------------------------------------------------------------------


class ChunkHasher:
    """SHA-256 of a stream as a whole and of each ``chunk``-sized piece of it."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.whole = hashlib.sha256()
        self._part = hashlib.sha256()
        self._in = 0
        self.chunks: list[str] = []

    def update(self, data: bytes | memoryview) -> None:
        self.whole.update(data)
        view = memoryview(data)
        while view:
            take = min(len(view), self.chunk - self._in)
            self._part.update(view[:take])
            self._in += take
            view = view[take:]
            if self._in == self.chunk:
                self.chunks.append(self._part.hexdigest())
                self._part, self._in = hashlib.sha256(), 0

    def finish(self) -> list[str]:
        if self._in:
            self.chunks.append(self._part.hexdigest())
            self._in = 0
        return self.chunks


def decode_entry(
    src: Path,
    entry: Entry,
    blob: Blob,
    dst_fd: int,
    *,
    chunk: int,
    disk: Disk = DEFAULT_DISK,
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Decompress one entry of a zstd blob from its volume into ``dst_fd`` at the raw offsets it covers.

    The stored bytes are checked against the signed manifest (per chunk, or whole); a whole blob's
    raw bytes are also checked against the blob's own SHA-256.
    """
    assert blob.chunk is not None
    first = entry.offset // blob.chunk
    hasher = ChunkHasher(chunk)
    raw_check = hashlib.sha256() if entry.part is None else None
    dctx = zstandard.ZstdDecompressor()
    pos_raw = entry.offset
    frame_idx = first
    pending = bytearray()
    stream = read_ranges(src, 0, entry.stored_size, follow=False)
    for data in stream:
        hasher.update(data)
        pending += data
        if on_bytes:
            on_bytes(len(data))
        while frame_idx < len(blob.frames) and len(pending) >= blob.frames[frame_idx]:
            size = blob.frames[frame_idx]
            raw_len = min(blob.chunk, blob.size - frame_idx * blob.chunk)
            try:
                grouped = dctx.decompress(bytes(pending[:size]), max_output_size=raw_len)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"frame {frame_idx} does not decompress ({exc})") from exc
            if len(grouped) != raw_len:
                raise IntegrityError(f"frame {frame_idx} decompresses to {len(grouped)} bytes, not {raw_len}")
            raw = ungroup_bytes(grouped, blob.group)
            if raw_check is not None:
                raw_check.update(raw)
            disk.write(dst_fd, memoryview(raw), pos_raw)
            pos_raw += raw_len
            del pending[:size]
            frame_idx += 1
    chunks = hasher.finish()
    if (entry.chunks and chunks != entry.chunks) or (
        not entry.chunks and hasher.whole.hexdigest() != entry.stored_sha256
    ):
        raise IntegrityError("hash mismatch")
    if pos_raw != entry.offset + entry.length:
        raise IntegrityError(f"decompressed {pos_raw - entry.offset} bytes, not {entry.length}")
    if raw_check is not None and raw_check.hexdigest() != blob.sha256:
        raise IntegrityError("decompressed bytes do not hash to the blob's SHA-256")
