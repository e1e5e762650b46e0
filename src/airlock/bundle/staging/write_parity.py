"""Writes the parity volumes of a bundle (``pack --parity``); the scheme is :mod:`airlock.bundle.format.parity`."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import zfec

from airlock.bundle.format import layout
from airlock.bundle.format.manifest import Parity, Volume
from airlock.bundle.format.parity import ShareSink, rows_of, share_entry, volume_stream
from airlock.common.fileio import DEFAULT_DISK, Disk
from airlock.common.progress import Meter, ProgressSink


class ParityWritten(NamedTuple):
    parity: Parity  # the manifest's record of the scheme
    volumes: list[Volume]  # the parity volumes, with their shares' hashes


def write_parity(
    out: Path,
    volumes: list[Volume],
    count: int,
    block: int,
    *,
    chunk_size: int,
    disk: Disk = DEFAULT_DISK,
    progress: ProgressSink | None = None,
) -> ParityWritten:
    """Compute ``count`` parity volumes over the data ``volumes`` written under ``out``."""
    k = len(volumes)
    rows = rows_of(volumes, block)
    streams = [volume_stream(out / v.name, v.entries, rows, block) for v in volumes]
    sinks = [
        ShareSink(out / layout.volume_name(k + j) / layout.parity_path(j), chunk_size, disk)
        for j in range(1, count + 1)
    ]
    encoder = zfec.Encoder(k, k + count)
    wanted = tuple(range(k, k + count))
    meter = Meter(progress, "parity", rows * block * k)
    try:
        for _ in range(rows):
            blocks = tuple(next(s) for s in streams)
            for sink, share in zip(sinks, encoder.encode(blocks, wanted), strict=True):
                sink.write(bytes(share))
            meter(block * k)
        results = [sink.commit() for sink in sinks]
    finally:
        for sink in sinks:
            sink.abort()
        meter.finish()
    parity_volumes = [
        Volume(
            number=k + j,
            role="parity",
            entries=[share_entry(layout.parity_path(j), rows * block, whole, chunks, chunk_size)],
        )
        for j, (whole, chunks) in enumerate(results, start=1)
    ]
    return ParityWritten(Parity(data_volumes=k, parity_volumes=count, block=block, rows=rows), parity_volumes)
