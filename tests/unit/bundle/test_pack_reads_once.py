"""pack reads each byte of a source once: a file hashed for the first time is written into the bundle
in the same read, and renamed into place; duplicates are still found by their hash and written once."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airlock.bundle.airgap.verify import VerifyOptions, verify
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair
from airlock.bundle.staging.hashing import HashCache, Stager, ToHash, hash_files
from bundle_helpers import CREATED, SMALL_CHUNK, do_pack, write_spec

MB = 1_000_000


def _io() -> tuple[int, int]:
    """Bytes this process has passed to read and write calls (Linux's /proc/self/io: rchar, wchar)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"]), int(fields["wchar"])


def _random(path: Path, size: int, seed: int) -> bytes:
    data = hashlib.shake_256(seed.to_bytes(4, "little")).digest(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


@pytest.fixture
def files_spec(tmp_path: Path) -> Path:
    """A folder of plain files: three distinct sizes, two files alike, two of one size that differ."""
    folder = tmp_path / "data"
    _random(folder / "a.bin", 6 * MB, seed=1)
    _random(folder / "b.bin", 5 * MB, seed=2)
    _random(folder / "small.txt", 1000, seed=3)
    same = _random(folder / "twin-1.bin", 4 * MB, seed=4)
    (folder / "twin-2.bin").write_bytes(same)
    _random(folder / "alike-size-1.bin", 3 * MB, seed=5)
    _random(folder / "alike-size-2.bin", 3 * MB, seed=6)
    return write_spec(tmp_path / "airlock.yaml", {"files": [{"path": "data"}]})


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts reads with Linux's /proc/self/io")
def test_pack_reads_and_writes_each_distinct_byte_once(
    tmp_path: Path, files_spec: Path, keys: KeyPair
) -> None:
    do_pack(files_spec, tmp_path / "warm-up", keys)  # imports and first-use costs out of the count
    before = _io()
    result = do_pack(files_spec, tmp_path / "bundle", keys)
    read, written = (after - start for after, start in zip(_io(), before, strict=True))
    # distinct content: a, b, small, one twin, both alike-size files; the twins are 8 MB of the sources
    distinct = 6 * MB + 5 * MB + 1000 + 4 * MB + 2 * 3 * MB
    twins = 2 * 4 * MB
    assert result.carried_bytes == distinct and result.written_bytes == distinct
    # Each distinct file is read once, but the twins (same size, same first bytes: maybe alike): both
    # are hashed first, then the one blob they share is copied. Hashing, then copying, reads 52 MB.
    once = (distinct - 4 * MB) + twins + 4 * MB
    assert read < once + 2 * MB, f"read {read} bytes where {once} are needed"
    assert written < distinct + 1 * MB, f"wrote {written} bytes for {distinct} distinct: a duplicate twice?"
    assert verify(VerifyOptions(VolumeSet([result.out], trust=[keys.public]))).ok
    assert not [p for p in result.out.rglob("*") if ".tmp-" in p.name]


def test_a_staged_bundle_is_the_one_copied_from_the_sources(
    tmp_path: Path, files_spec: Path, keys: KeyPair
) -> None:
    out = tmp_path / "bundle"
    staged = do_pack(files_spec, out, keys, volume_size=8 * MB)
    assert len(staged.volumes) > 1
    for volume in staged.volumes:  # hashes stay cached, so this time every blob is copied from its source
        shutil.rmtree(volume.path)
    copied = do_pack(files_spec, out, keys, volume_size=8 * MB)
    assert copied.kept_bytes == 0 and copied.written_bytes == copied.carried_bytes
    assert copied.bundle == staged.bundle, "same entries, chunk hashes and volumes either way"
    assert verify(VerifyOptions(VolumeSet([out], trust=[keys.public]))).ok


def test_hash_files_stages_only_files_that_cannot_be_duplicates(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    paths = {
        "unique": _random(folder / "unique", 300_000, seed=1),
        "twin-1": _random(folder / "twin-1", 200_000, seed=2),
        "alike-1": _random(folder / "alike-1", 150_000, seed=3),
        "alike-2": _random(folder / "alike-2", 150_000, seed=4),
        "too-big": _random(folder / "too-big", 500_000, seed=5),
    }
    (folder / "twin-2").write_bytes(paths["twin-1"])
    stager = Stager(tmp_path / "staged", chunk_size=SMALL_CHUNK, largest=400_000)
    names = sorted(p.name for p in folder.iterdir())
    hashes = hash_files(
        [ToHash(folder / n, None, n) for n in names],
        HashCache(tmp_path / "cache.json"),
        workers=2,
        stager=stager,
    )
    taken = {n: stager.take(folder / n) for n in names}
    assert {n for n, s in taken.items() if s is not None} == {"unique", "alike-1", "alike-2"}
    for name, copy in taken.items():
        if copy is None:
            continue
        data = (folder / name).read_bytes()
        assert (
            copy.path.read_bytes() == data
            and hashes[folder / name].sha256 == hashlib.sha256(data).hexdigest()
        )
        pieces = [data[i : i + SMALL_CHUNK] for i in range(0, len(data), SMALL_CHUNK)]
        assert list(copy.chunks) == [hashlib.sha256(p).hexdigest() for p in pieces]
    stager.discard()
    assert not list((tmp_path / "staged").iterdir()), "what no one renamed into place is removed"


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from airlock.common.fileio import Disk
    from airlock.bundle.staging.pack import PackOptions, pack

    class Killer(Disk):
        def __init__(self, budget): self.budget = budget
        def write(self, fd, data, offset):
            if len(data) >= self.budget:
                os.kill(os.getpid(), signal.SIGKILL)
            self.budget -= len(data)
            super().write(fd, data, offset)

    pack(PackOptions(spec_path=Path(sys.argv[1]), out=Path(sys.argv[2]), sign_key=Path(sys.argv[3]),
                     chunk_size={chunk}, workers=1, created="{created}", disk=Killer(int(sys.argv[4]))))
    print("finished without being killed")
    """
).format(chunk=SMALL_CHUNK, created=CREATED)


def test_pack_killed_while_staging_resumes(tmp_path: Path, files_spec: Path, keys: KeyPair) -> None:
    out = tmp_path / "bundle"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    args = [str(files_spec), str(out), str(keys.private), str(8 * MB)]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    assert not list(out.glob("vol-*/manifest.json"))
    assert [p for p in out.rglob("*") if ".tmp-" in p.name], "killed mid-copy, a staged temp file is left"
    result = do_pack(files_spec, out, keys)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name], "the earlier run's temp files are removed"
    fresh = do_pack(files_spec, tmp_path / "fresh", keys)
    assert result.bundle == fresh.bundle
    assert verify(VerifyOptions(VolumeSet([out], trust=[keys.public]))).ok


@pytest.mark.parametrize("spare_core", [True, False])
def test_staged_chunk_hashes_on_one_thread_or_two(tmp_path: Path, spare_core: bool) -> None:
    data = _random(tmp_path / "big", 11 * MB + 123, seed=7)  # more buffers than the ring holds
    stager = Stager(tmp_path / "staged", chunk_size=3 * MB, largest=20 * MB)
    digest, copy = stager.copy(tmp_path / "big", spare_core=spare_core)
    assert digest.size == len(data) and digest.sha256 == hashlib.sha256(data).hexdigest()
    pieces = [data[i : i + 3 * MB] for i in range(0, len(data), 3 * MB)]
    assert list(copy.chunks) == [hashlib.sha256(p).hexdigest() for p in pieces]
    assert copy.path.read_bytes() == data
