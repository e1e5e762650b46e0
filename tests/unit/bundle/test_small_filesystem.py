"""A real full disk: a 128 kB tmpfs (needs root to mount; the fault-hook tests cover the rest)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.bundle.airgap.install import InstallOptions, install
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair
from airlock.common.fileio import Disk
from airlock.errors import NoSpaceError
from bundle_helpers import Staging, do_pack


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mnt)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the Disk fault hook tests cover this"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_pack_onto_a_full_filesystem(small_fs: Path, staging: Staging, keys: KeyPair) -> None:
    with pytest.raises(NoSpaceError, match="the disk is full"):
        do_pack(staging.spec, small_fs / "bundle", keys, volume_size=100_000)
    assert not list((small_fs / "bundle").glob("vol-*/manifest.json"))
    assert not [p for p in small_fs.rglob("*") if ".tmp-" in p.name]


def test_install_onto_a_full_filesystem(
    small_fs: Path, staging: Staging, keys: KeyPair, tmp_path: Path
) -> None:
    bundle = do_pack(staging.spec, tmp_path / "bundle", keys, volume_size=100_000)
    with pytest.raises(NoSpaceError, match="are needed to install"):
        install(InstallOptions(VolumeSet([bundle.out], trust=[keys.public]), store=small_fs / "store"))

    class Optimist(Disk):  # skips the up-front check, so the kernel's ENOSPC arrives mid-copy
        def free_bytes(self, path: Path) -> int:
            return 1 << 40

    with pytest.raises(NoSpaceError, match="the disk is full"):
        install(
            InstallOptions(
                VolumeSet([bundle.out], trust=[keys.public], disk=Optimist()), store=small_fs / "store"
            )
        )
    assert not (small_fs / "store" / "hub" / "models--local--tiny").exists()
    assert not [p for p in small_fs.rglob("*") if ".tmp-" in p.name]
