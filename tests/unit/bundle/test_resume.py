"""Interrupted work resumes: pack and install killed with SIGKILL mid-write keep what is complete."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airlock.bundle.airgap.install import InstallOptions, install
from airlock.bundle.airgap.verify import VerifyOptions, verify
from airlock.bundle.format import layout
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair
from airlock.common.fileio import Disk
from airlock.errors import NoSpaceError
from bundle_helpers import CREATED, SMALL_CHUNK, Staging, do_pack

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from airlock.common.fileio import Disk

    class Killer(Disk):
        def __init__(self, budget): self.budget = budget
        def write(self, fd, data, offset):
            if len(data) >= self.budget:
                os.kill(os.getpid(), signal.SIGKILL)
            self.budget -= len(data)
            super().write(fd, data, offset)

    budget = int(sys.argv[2])
    if sys.argv[1] == "pack":
        from airlock.bundle.staging.pack import PackOptions, pack
        pack(PackOptions(spec_path=Path(sys.argv[3]), out=Path(sys.argv[4]), sign_key=Path(sys.argv[5]),
                         volume_size=100_000, chunk_size={chunk}, workers=1, created="{created}",
                         disk=Killer(budget)))
    else:
        from airlock.bundle.airgap.install import InstallOptions, install
        from airlock.bundle.format.reader import VolumeSet
        install(InstallOptions(VolumeSet([Path(sys.argv[3])], trust=[Path(sys.argv[5])], workers=1,
                                         disk=Killer(budget)), store=Path(sys.argv[4])))
    print("finished without being killed")
    """
).format(chunk=SMALL_CHUNK, created=CREATED)


def _killed(tmp_path: Path, *args: str) -> None:
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr


def test_pack_resumes_after_kill_9(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    out = tmp_path / "bundle"
    _killed(tmp_path, "pack", "150000", str(staging.spec), str(out), str(keys.private))
    assert not list(out.glob("vol-*/manifest.json")), "an interrupted pack leaves no manifest"
    assert (layout.pack_state_dir(out) / layout.PACK_JOURNAL).stat().st_size > 0
    assert all(p.name.startswith("vol-") for p in out.iterdir()), "no working state in the folder copied"
    result = do_pack(staging.spec, out, keys, volume_size=100_000)
    assert result.kept_bytes > 0, "what was complete is kept"
    assert result.written_bytes + result.kept_bytes == result.stored_bytes
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    fresh = do_pack(staging.spec, tmp_path / "fresh", keys, volume_size=100_000)
    assert result.bundle == fresh.bundle, "the resumed bundle is the one an uninterrupted pack makes"
    assert verify(VerifyOptions(VolumeSet([out], trust=[keys.public]))).ok


def test_pack_redoes_a_kept_blob_that_no_longer_hashes(
    tmp_path: Path, staging: Staging, keys: KeyPair
) -> None:
    out = tmp_path / "bundle"
    first = do_pack(staging.spec, out, keys, volume_size=100_000)
    entry = first.manifest.volumes[0].entries[0]
    path = out / "vol-0001" / entry.path
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    again = do_pack(staging.spec, out, keys, volume_size=100_000)
    assert again.written_bytes == entry.stored_size
    assert verify(VerifyOptions(VolumeSet([out], trust=[keys.public]))).ok


def test_install_resumes_after_kill_9(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    bundle = do_pack(staging.spec, tmp_path / "bundle", keys, volume_size=100_000)
    store = tmp_path / "store"
    _killed(tmp_path, "install", "120000", str(bundle.out), str(store), str(keys.public))
    assert not (store / "hub" / "models--local--tiny").exists(), "nothing is visible after the kill"
    result = install(InstallOptions(VolumeSet([bundle.out], trust=[keys.public]), store=store))
    assert result.complete
    assert result.copied_bytes < bundle.stored_bytes, "verified blobs from the killed run were kept"
    snapshot = next(m.path for m in result.models if m.name == "smol")
    assert (snapshot / "tiny.gguf").read_bytes() == staging.gguf.read_bytes()


class FullDisk(Disk):
    def __init__(self, room: int) -> None:
        self.room = room

    def write(self, fd: int, data: memoryview, offset: int) -> None:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        super().write(fd, data, offset)


def test_full_disk_while_packing(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(NoSpaceError, match=r"vol-000\d/blobs/sha256/.*the disk is full") as info:
        do_pack(staging.spec, out, keys, volume_size=100_000, disk=FullDisk(120_000))
    assert info.value.exit_code == 19
    assert not list(out.glob("vol-*/manifest.json"))
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name], "temp files are removed"
    result = do_pack(staging.spec, out, keys, volume_size=100_000)
    assert result.kept_bytes > 0
    assert verify(VerifyOptions(VolumeSet([out], trust=[keys.public]))).ok


def test_pack_keeps_its_state_beside_out_not_in_it(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    out = tmp_path / "bundle"
    result = do_pack(staging.spec, out, keys, volume_size=100_000)
    assert sorted(p.name for p in out.iterdir()) == [v.path.name for v in result.volumes]
    state = tmp_path / ".bundle.airlock-pack"
    assert (state / layout.PACK_JOURNAL).is_file() and (state / layout.PACK_HASH_CACHE).is_file()
    again = do_pack(staging.spec, out, keys, volume_size=100_000)
    assert again.earlier_finished and again.written_bytes == 0 and again.bundle == result.bundle


def test_pack_moves_an_old_state_folder_out_of_out(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    out = tmp_path / "bundle"
    first = do_pack(staging.spec, out, keys, volume_size=100_000)
    os.replace(layout.pack_state_dir(out), out / layout.PACK_STATE_DIR)  # as airlock 0.1 left it
    again = do_pack(staging.spec, out, keys, volume_size=100_000)
    assert again.bundle == first.bundle and again.written_bytes == 0, "the old journal was used"
    assert not (out / layout.PACK_STATE_DIR).exists() and layout.pack_state_dir(out).is_dir()
