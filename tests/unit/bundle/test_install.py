"""Install: the Hugging Face cache layout, straight from volumes, idempotent, atomic, and resumable."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from airlock.bundle.airgap.install import InstallOptions, InstallResult, install
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair
from airlock.bundle.staging.pack import PackResult
from airlock.common.fileio import DEFAULT_DISK, Disk
from airlock.errors import IntegrityError, NoSpaceError, SignatureError, UnlistedFileError, UnsafePathError
from airlock.spec import load_spec
from airlock.store import Store, resolve_gguf, resolve_model_dir
from airlock.store import layout as store_layout
from bundle_helpers import Staging, do_pack


def _install(dirs: list[Path], store: Path, keys: KeyPair, disk: Disk = DEFAULT_DISK) -> InstallResult:
    return install(InstallOptions(VolumeSet(dirs, trust=[keys.public], workers=2, disk=disk), store=store))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _visible(store: Path) -> list[str]:
    """What a reader of the store sees (everything but airlock's own state folder)."""
    return sorted(
        p.relative_to(store).as_posix() for p in store.rglob("*") if store_layout.STORE_STATE not in p.parts
    )


def test_install_lays_out_the_hugging_face_cache(
    bundle: PackResult, keys: KeyPair, staging: Staging, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    result = _install([bundle.out], store, keys)
    assert result.complete and result.needed == []
    tiny = next(m for m in result.models if m.name == "tiny")
    assert tiny.repo == "local/tiny" and tiny.path.parent.name == "snapshots"
    repo_dir = store / "hub" / "models--local--tiny"
    assert (repo_dir / "refs" / "main").read_text() == tiny.commit
    for f in staging.model_dir.iterdir():
        link = tiny.path / f.name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert os.readlink(link) == f"../../blobs/{_sha(f)}"
        assert link.read_bytes() == f.read_bytes()
    gguf = store / "gguf" / "tiny.gguf"
    assert gguf.is_symlink() and gguf.read_bytes() == staging.gguf.read_bytes()
    assert not list((store / ".airlock" / "incoming").iterdir()), "incoming/ is emptied"


def test_huggingface_hub_finds_installed_models_offline(
    bundle: PackResult, keys: KeyPair, tmp_path: Path
) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download

    store = tmp_path / "store"
    result = _install([bundle.out], store, keys)
    tiny = next(m for m in result.models if m.name == "tiny")
    found = snapshot_download("local/tiny", cache_dir=store / "hub", local_files_only=True)
    assert Path(found) == tiny.path
    config = hf_hub_download("local/tiny", "config.json", cache_dir=store / "hub", local_files_only=True)
    assert json.loads(Path(config).read_text())["model_type"] == "llama"


def test_serve_resolves_the_bundle_spec_from_the_store(
    bundle: PackResult, keys: KeyPair, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    result = _install([bundle.out], store, keys)
    assert result.spec_path is not None
    spec = load_spec(result.spec_path)
    assert spec.store == store
    tiny, smol = spec.models
    assert tiny.hf is not None and tiny.hf.repo == "local/tiny" and tiny.path is None
    assert resolve_model_dir(tiny, spec.store) == next(m.path for m in result.models if m.name == "tiny")
    assert resolve_gguf(smol, spec.store).read_bytes()[:4] == b"GGUF"


def test_the_original_spec_also_resolves_on_the_other_side(
    bundle: PackResult, keys: KeyPair, staging: Staging, tmp_path: Path
) -> None:
    """The staging spec's paths do not exist over there; the store stands in for them by name."""
    store = tmp_path / "store"
    _install([bundle.out], store, keys)
    spec = load_spec(staging.spec)
    tiny = spec.models[0].model_copy(update={"path": Path("/nowhere/tiny-model")})
    smol = spec.models[1].model_copy(update={"gguf": Path("/nowhere/tiny.gguf")})
    assert (resolve_model_dir(tiny, store) / "config.json").is_file()
    assert resolve_gguf(smol, store) == store / "gguf" / "tiny.gguf"


def test_install_is_idempotent_and_copies_nothing_twice(
    bundle: PackResult, keys: KeyPair, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    first = _install([bundle.out], store, keys)
    inodes = {p: p.stat().st_ino for p in (store / "hub").rglob("blobs/*")}
    again = _install([bundle.out], store, keys)
    assert again.complete and again.copied_bytes == 0 and again.reused_bytes == first.copied_bytes
    assert {p: p.stat().st_ino for p in (store / "hub").rglob("blobs/*")} == inodes
    db = Store(store).load_db()
    assert len(db.models) == 2 and len(db.bundles) == 1


def test_shared_blobs_are_linked_not_copied(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    """A second bundle with the same GGUF under another model name reuses the store's copy."""
    first = do_pack(staging.spec, tmp_path / "b1", keys)
    store = tmp_path / "store"
    _install([first.out], store, keys)
    spec2 = staging.spec.with_name("second.yaml")
    spec2.write_text(staging.spec.read_text().replace("name: smol", "name: smol-copy"))
    second = do_pack(spec2, tmp_path / "b2", keys)
    result = _install([second.out], store, keys)
    assert result.copied_bytes == 0, "the bundle carries them, but the store already holds them"
    assert result.reused_bytes == second.carried_bytes
    a = store / "hub" / "models--local--smol" / "blobs" / _sha(staging.gguf)
    b = store / "hub" / "models--local--smol-copy" / "blobs" / _sha(staging.gguf)
    assert a.stat().st_ino == b.stat().st_ino, "the store holds it once (hard link)"


def test_volumes_mounted_one_after_another(bundle: PackResult, keys: KeyPair, tmp_path: Path) -> None:
    store = tmp_path / "store"
    seen: list[list[int]] = []
    for v in bundle.volumes:
        result = _install([v.path], store, keys)
        seen.append(result.needed)
        if v.number < len(bundle.volumes):
            assert not result.complete
            assert _visible(store) == ["hub"], "nothing is visible until the last volume is in"
    assert result.complete, seen
    assert seen[0] and seen[-1] == []
    assert Store(store).load_db().models


def test_needed_names_only_the_volumes_still_missing(
    bundle: PackResult, keys: KeyPair, tmp_path: Path
) -> None:
    """After volume 1 was installed, installing volume 2 must not ask for volume 1 again."""
    store = tmp_path / "store"
    count = len(bundle.volumes)
    assert count >= 3, "the fixture splits the GGUF over three volumes or more"
    first = _install([bundle.volumes[0].path], store, keys)
    assert first.needed == list(range(2, count + 1))
    second = _install([bundle.volumes[1].path], store, keys)
    assert second.needed == list(range(3, count + 1))
    assert _install([v.path for v in bundle.volumes[2:]], store, keys).complete


def test_parts_are_written_in_place_not_concatenated(
    bundle: PackResult, keys: KeyPair, tmp_path: Path
) -> None:
    """With the volume holding the GGUF's last part mounted first, its bytes land at their offset."""
    store = tmp_path / "store"
    last = bundle.volumes[-1]
    result = _install([last.path], store, keys)
    assert not result.complete
    partial = list((store / ".airlock" / "incoming").rglob("*.partial"))
    assert len(partial) == 1
    blob = bundle.manifest.blob(partial[0].name.split(".")[0])
    assert partial[0].stat().st_size == blob.size
    assert _install([v.path for v in bundle.volumes[:-1]], store, keys).complete


def test_a_corrupt_blob_installs_nothing(bundle: PackResult, keys: KeyPair, tmp_path: Path) -> None:
    store = tmp_path / "store"
    victim = bundle.volumes[0].path / bundle.manifest.volumes[0].entries[0].path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="volume 1: blobs/sha256/") as info:
        _install([bundle.out], store, keys)
    assert info.value.exit_code == 14
    assert _visible(store) == ["hub"], "no model, link or file is visible"
    assert Store(store).load_db().models == []


@pytest.mark.parametrize("bad", ["extra", "link"])
def test_structure_is_checked_before_anything_is_written(
    bundle: PackResult, keys: KeyPair, tmp_path: Path, bad: str
) -> None:
    vol = bundle.volumes[0].path
    if bad == "extra":
        (vol / "evil.sh").write_text("rm -rf /")
        expected: type[Exception] = UnlistedFileError
    else:
        entry = vol / bundle.manifest.volumes[0].entries[0].path
        entry.unlink()
        os.symlink("/etc/passwd", entry)
        expected = UnsafePathError
    with pytest.raises(expected):
        _install([bundle.out], tmp_path / "store", keys)
    assert not any((tmp_path / "store" / ".airlock" / "incoming").rglob("*")), "nothing was copied"


def test_wrong_key_installs_nothing(bundle: PackResult, other_keys: KeyPair, tmp_path: Path) -> None:
    with pytest.raises(SignatureError):
        _install([bundle.out], tmp_path / "store", other_keys)
    assert not (tmp_path / "store").exists()


class FullDisk(Disk):
    """A disk that fills up after ``room`` bytes."""

    def __init__(self, room: int) -> None:
        self.room = room

    def write(self, fd: int, data: memoryview, offset: int) -> None:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        super().write(fd, data, offset)


def test_full_disk_while_installing(bundle: PackResult, keys: KeyPair, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with pytest.raises(NoSpaceError, match="the disk is full") as info:
        _install([bundle.out], store, keys, disk=FullDisk(50_000))
    assert info.value.exit_code == 19
    assert _visible(store) == ["hub"]
    assert not [p for p in store.rglob("*") if ".tmp-" in p.name], "temp files are cleaned up"
    result = _install([bundle.out], store, keys)  # room again: the run resumes
    assert result.complete


def test_too_little_free_space_fails_before_copying(
    bundle: PackResult, keys: KeyPair, tmp_path: Path
) -> None:
    class Tiny(Disk):
        def free_bytes(self, path: Path) -> int:
            return 1000

    with pytest.raises(NoSpaceError, match="are needed to install"):
        _install([bundle.out], tmp_path / "store", keys, disk=Tiny())
    assert not any((tmp_path / "store" / ".airlock" / "incoming").rglob("*"))


def test_served_spec_is_plain_yaml(bundle: PackResult, keys: KeyPair, tmp_path: Path) -> None:
    result = _install([bundle.out], tmp_path / "store", keys)
    assert result.spec_path is not None
    data = yaml.safe_load(result.spec_path.read_text())
    assert data["store"] == str(tmp_path / "store")
    assert {m["name"] for m in data["models"]} == {"tiny", "smol"}
