"""Every file of every volume, tampered one way at a time, is reported by verify with its volume.

Flip a byte, cut the last byte off, or delete the file: whichever volume it is on, and even where
another copy of the same metadata still verifies, verify names the volume and the file.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from airlock.bundle.airgap.rebuild import RebuildOptions, rebuild
from airlock.bundle.airgap.verify import VerifyOptions, VerifyReport, verify
from airlock.bundle.format import layout
from airlock.bundle.format.manifest import canonical_json
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair
from airlock.bundle.staging.pack import PackResult
from airlock.errors import IntegrityError, UnsafePathError
from bundle_helpers import Staging, do_pack


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def _delete(path: Path) -> None:
    path.unlink()


TAMPERS: dict[str, Callable[[Path], None]] = {"flip": _flip, "truncate": _truncate, "delete": _delete}


def _verify(out: Path, keys: KeyPair) -> VerifyReport:
    return verify(VerifyOptions(VolumeSet([out], trust=[keys.public], workers=2)))


def test_every_file_of_every_volume_tampered_is_reported_with_its_volume(
    bundle: PackResult, keys: KeyPair, tmp_path: Path
) -> None:
    pristine = tmp_path / "pristine"
    shutil.copytree(bundle.out, pristine)
    files = [
        (v.number, p.relative_to(v.path).as_posix())
        for v in bundle.volumes
        for p in sorted(v.path.rglob("*"))
        if p.is_file()
    ]
    assert len(bundle.volumes) >= 3 and len(files) >= 4 * len(bundle.volumes)
    passed: list[str] = []
    tried = 0
    for number, rel in files:
        name = layout.volume_name(number)
        path = bundle.out / name / rel
        for how, tamper in TAMPERS.items():
            tamper(path)
            tried += 1
            report = _verify(bundle.out, keys)
            named = [p for p in report.problems if p.volume == number and p.path == rel]
            if not named or f"volume {number}" not in named[0].message:
                passed.append(f"{how} {name}/{rel}: {[p.message for p in report.problems]}")
            elif rel in layout.METADATA_FILES:
                assert named[0].kind == "corrupt", named[0]
            shutil.copy2(pristine / name / rel, path)
    assert not passed, f"{len(passed)} of {tried} tampered files were not reported:\n" + "\n".join(passed)
    assert _verify(bundle.out, keys).ok


def test_a_damaged_signature_copy_is_reported_though_another_copy_verifies(
    bundle: PackResult, keys: KeyPair
) -> None:
    last = bundle.volumes[-1]
    _flip(last.path / layout.SIGNATURE)
    report = _verify(bundle.out, keys)
    assert report.signed_by == keys.key_id, "the intact copies still prove who signed it"
    (problem,) = report.problems
    assert problem.volume == last.number and problem.path == layout.SIGNATURE
    assert problem.message.startswith(f"volume {last.number}: manifest.sig is damaged")
    with pytest.raises(IntegrityError) as info:
        report.raise_for_problems()
    assert info.value.exit_code == 14


def test_the_first_volume_damaged_the_others_still_prove_the_signature(
    bundle: PackResult, keys: KeyPair
) -> None:
    _flip(bundle.volumes[0].path / layout.MANIFEST)
    report = _verify(bundle.out, keys)
    assert report.signed_by == keys.key_id
    assert [(p.volume, p.path) for p in report.problems] == [(1, layout.MANIFEST)]
    assert "differs from the signed copy" in report.problems[0].message


def test_a_flipped_byte_in_volume_json_names_the_volume_whose_index_is_damaged(
    bundle: PackResult, keys: KeyPair
) -> None:
    index = bundle.volumes[1].path / layout.VOLUME_INDEX
    data = index.read_bytes()
    at = data.index(b"blobs/sha256/") + len("blobs/sha256/")
    index.write_bytes(data[:at] + b"x" + data[at + 1 :])  # a path that is no longer a blob path
    (problem,) = _verify(bundle.out, keys).problems
    assert problem.volume == 2 and problem.path == layout.VOLUME_INDEX
    assert problem.message.startswith("volume 2's index (volume.json) is damaged")
    assert "{path" not in problem.message, "no template placeholder printed literally"
    assert "'blobs/sha256/x" in problem.message


def test_a_volume_index_that_disagrees_names_its_volume(bundle: PackResult, keys: KeyPair) -> None:
    path = bundle.volumes[0].path / layout.VOLUME_INDEX
    raw = json.loads(path.read_bytes())
    raw["number"] = 2  # claims to be another volume: what it holds says which it is
    path.write_bytes(canonical_json(raw))
    report = _verify(bundle.out, keys)
    (problem,) = report.problems
    assert problem.volume == 1 and "volume 1's index (volume.json) is damaged" in problem.message
    assert sorted(report.present) == [v.number for v in bundle.volumes]


def test_a_linked_signature_on_another_volume_is_an_unsafe_path(
    bundle: PackResult, keys: KeyPair, tmp_path: Path
) -> None:
    sig = bundle.volumes[1].path / layout.SIGNATURE
    sig.rename(tmp_path / "sig")
    sig.symlink_to(tmp_path / "sig")
    report = _verify(bundle.out, keys)
    assert {(p.kind, p.volume, p.path) for p in report.problems} == {("unsafe_path", 2, layout.SIGNATURE)}
    with pytest.raises(UnsafePathError):
        report.raise_for_problems()


def test_rebuild_uses_a_volume_whose_signature_copy_is_damaged_and_writes_the_good_one(
    tmp_path: Path, staging: Staging, keys: KeyPair
) -> None:
    packed = do_pack(staging.spec, tmp_path / "parity", keys, volume_size=100_000, parity_percent=30)
    good = (packed.volumes[0].path / layout.SIGNATURE).read_bytes()
    for v in packed.volumes[1:]:
        _flip(v.path / layout.SIGNATURE)  # only volume 1 keeps a good copy; the others still hold good blobs
    lost = packed.volumes[0].path
    shutil.move(lost / layout.SIGNATURE, tmp_path / "kept.sig")
    shutil.move(lost, tmp_path / "lost")
    (packed.volumes[1].path / layout.SIGNATURE).write_bytes(good)  # one copy must verify
    result = rebuild(
        RebuildOptions(VolumeSet([packed.out], trust=[keys.public]), volume=1, out=tmp_path / "new")
    )
    assert (result.path / layout.SIGNATURE).read_bytes() == good
    assert packed.manifest.parity is not None
    assert len(result.used) == packed.manifest.parity.data_volumes
