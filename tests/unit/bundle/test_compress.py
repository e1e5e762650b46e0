"""zstd with byte grouping: lossless, smaller for bf16 weights, and installable part by part."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zstandard

from airlock.bundle.airgap.install import InstallOptions, install
from airlock.bundle.airgap.verify import VerifyOptions, verify
from airlock.bundle.format.compress import group_bytes, safetensors_group, ungroup_bytes
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair
from airlock.errors import IntegrityError
from airlock.testing.tiny_files import safetensors_bytes, write_safetensors
from bundle_helpers import Staging, do_pack


@pytest.mark.parametrize("group", [1, 2, 4])
@pytest.mark.parametrize("size", [0, 1, 7, 4096, 4099])
def test_grouping_round_trips(group: int, size: int) -> None:
    data = os.urandom(size)
    assert ungroup_bytes(group_bytes(data, group), group) == data


def test_grouping_puts_high_bytes_first() -> None:
    values = np.array([0x1234, 0xABCD], dtype="<u2").tobytes()
    assert group_bytes(values, 2) == bytes([0x12, 0xAB, 0x34, 0xCD])


def test_grouping_shrinks_bf16_weights() -> None:
    data = safetensors_bytes({"w": ("BF16", [512, 512])}, seed=5)
    plain = len(zstandard.ZstdCompressor(level=3).compress(data))
    grouped = len(zstandard.ZstdCompressor(level=3).compress(group_bytes(data, 2)))
    assert grouped < plain * 0.95, (plain, grouped)


def test_the_group_follows_the_dtype(tmp_path: Path) -> None:
    assert safetensors_group(write_safetensors(tmp_path / "a.safetensors", {"w": ("BF16", [64, 64])})) == 2
    assert safetensors_group(write_safetensors(tmp_path / "b.safetensors", {"w": ("F32", [64, 64])})) == 1


@pytest.fixture
def bf16_staging(staging: Staging) -> Staging:
    write_safetensors(staging.model_dir / "model.safetensors", {"w": ("BF16", [256, 256])}, seed=2)
    return staging


def test_compressed_bundle_splits_verifies_and_installs(
    tmp_path: Path, bf16_staging: Staging, keys: KeyPair
) -> None:
    raw = do_pack(bf16_staging.spec, tmp_path / "raw", keys, volume_size=60_000)
    packed = do_pack(
        bf16_staging.spec,
        tmp_path / "zstd",
        keys,
        volume_size=60_000,
        compress="zstd",
        compress_frame=16 * 1024,
    )
    blobs = {b.sha256: b for b in packed.manifest.blobs}
    weights = next(f for a, f in packed.manifest.iter_files() if f.path == "model.safetensors")
    assert blobs[weights.sha256].encoding == "zstd" and blobs[weights.sha256].group == 2
    assert packed.stored_bytes < raw.stored_bytes
    assert any(e.part for v in packed.manifest.volumes for e in v.entries if e.path.endswith(".zst.p0002")), (
        "a compressed blob is split between frames"
    )
    assert verify(VerifyOptions(VolumeSet([packed.out], trust=[keys.public]))).ok
    store = tmp_path / "store"
    for v in reversed(packed.volumes):  # parts arrive out of order, each decompresses on its own
        result = install(InstallOptions(VolumeSet([v.path], trust=[keys.public]), store=store))
    assert result.complete
    tiny = next(m for m in result.models if m.name == "tiny")
    assert (tiny.path / "model.safetensors").read_bytes() == (
        bf16_staging.model_dir / "model.safetensors"
    ).read_bytes()


def test_auto_leaves_incompressible_blobs_raw(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    (staging.model_dir / "noise.dat").write_bytes(os.urandom(200_000))
    packed = do_pack(staging.spec, tmp_path / "auto", keys, compress="auto")
    noise = next(f for _, f in packed.manifest.iter_files() if f.path == "noise.dat")
    assert packed.manifest.blob(noise.sha256).encoding == "raw"


def test_a_corrupt_compressed_blob_installs_nothing(
    tmp_path: Path, bf16_staging: Staging, keys: KeyPair
) -> None:
    packed = do_pack(bf16_staging.spec, tmp_path / "zstd", keys, compress="zstd")
    entry = next(e for v in packed.manifest.volumes for e in v.entries if e.path.endswith(".zst"))
    path = packed.volumes[0].path / entry.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=entry.path):
        install(InstallOptions(VolumeSet([packed.out], trust=[keys.public]), store=tmp_path / "store"))
    assert not (tmp_path / "store" / "hub" / "models--local--tiny").exists()
