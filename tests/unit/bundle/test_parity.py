"""Parity (zfec Reed-Solomon): a lost or damaged volume is rebuilt on the air-gapped side."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from airlock.bundle.airgap.rebuild import RebuildOptions, rebuild
from airlock.bundle.airgap.verify import VerifyOptions, verify
from airlock.bundle.format.parity import parity_volume_count
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair
from airlock.bundle.staging.pack import PackResult
from airlock.errors import BundleError
from bundle_helpers import Staging, do_pack


@pytest.fixture
def with_parity(tmp_path: Path, staging: Staging, keys: KeyPair) -> PackResult:
    return do_pack(staging.spec, tmp_path / "bundle", keys, volume_size=100_000, parity_percent=30)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_parity_volumes_follow_the_data_volumes(with_parity: PackResult, keys: KeyPair) -> None:
    m = with_parity.manifest
    assert m.parity is not None
    data = [v for v in m.volumes if v.role == "data"]
    assert m.parity.data_volumes == len(data) and m.parity.parity_volumes == parity_volume_count(
        len(data), 30
    )
    assert [v.role for v in m.volumes] == ["data"] * len(data) + ["parity"] * m.parity.parity_volumes
    assert all(v.bytes <= 100_000 for v in with_parity.volumes)
    assert verify(VerifyOptions(VolumeSet([with_parity.out], trust=[keys.public]))).ok


@pytest.mark.parametrize("lost", [1, 2, "last-data", "parity"])
def test_a_lost_volume_is_rebuilt_byte_for_byte(
    with_parity: PackResult, keys: KeyPair, tmp_path: Path, lost: object
) -> None:
    m = with_parity.manifest
    assert m.parity is not None
    number = {"last-data": m.parity.data_volumes, "parity": len(m.volumes)}.get(str(lost), lost)
    assert isinstance(number, int)
    volume = with_parity.volumes[number - 1].path
    original = _snapshot(volume)
    shutil.move(volume, tmp_path / "lost")
    report = verify(VerifyOptions(VolumeSet([with_parity.out], trust=[keys.public])))
    assert report.missing == [number]
    result = rebuild(
        RebuildOptions(VolumeSet([with_parity.out], trust=[keys.public]), volume=number, out=tmp_path / "new")
    )
    assert _snapshot(result.path) == original
    assert verify(VerifyOptions(VolumeSet([with_parity.out, result.path], trust=[keys.public]))).ok


def test_a_damaged_volume_is_rebuilt(with_parity: PackResult, keys: KeyPair, tmp_path: Path) -> None:
    victim = with_parity.volumes[0].path / with_parity.manifest.volumes[0].entries[0].path
    good = victim.read_bytes()
    victim.write_bytes(b"\x00" * len(good))
    report = verify(VerifyOptions(VolumeSet([with_parity.out], trust=[keys.public])))
    assert report.corrupt_volumes() == [1]
    result = rebuild(
        RebuildOptions(VolumeSet([with_parity.out], trust=[keys.public]), volume=1, out=tmp_path / "new")
    )
    assert (result.path / with_parity.manifest.volumes[0].entries[0].path).read_bytes() == good
    assert 1 not in result.used


def test_too_many_losses_are_refused_clearly(with_parity: PackResult, keys: KeyPair, tmp_path: Path) -> None:
    m = with_parity.manifest
    assert m.parity is not None
    keep = [
        v.path for v in with_parity.volumes[: m.parity.data_volumes - 1]
    ]  # one data volume and all parity lost
    with pytest.raises(BundleError, match="intact volumes needed, "):
        rebuild(
            RebuildOptions(
                VolumeSet(keep, trust=[keys.public]), volume=m.parity.data_volumes, out=tmp_path / "new"
            )
        )


def test_rebuild_needs_parity(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    plain = do_pack(staging.spec, tmp_path / "plain", keys, volume_size=100_000)
    with pytest.raises(BundleError, match="no parity"):
        rebuild(RebuildOptions(VolumeSet([plain.out], trust=[keys.public]), volume=1, out=tmp_path / "new"))


def test_one_volume_bundle_gets_a_mirror(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    result = do_pack(staging.spec, tmp_path / "one", keys, parity_percent=10)
    assert [v.role for v in result.manifest.volumes] == ["data", "parity"]
    shutil.rmtree(result.volumes[0].path)
    rebuilt = rebuild(
        RebuildOptions(VolumeSet([result.out], trust=[keys.public]), volume=1, out=tmp_path / "new")
    )
    assert verify(VerifyOptions(VolumeSet([rebuilt.path], trust=[keys.public]))).missing == [2]
