"""Pack then verify, and every bad input verify must catch, each with its own exit code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from airlock.bundle.airgap.verify import VerifyOptions, VerifyReport, verify
from airlock.bundle.format import layout
from airlock.bundle.format.manifest import Manifest, canonical_json
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import MANIFEST_CONTEXT, KeyPair, load_private_key, sign
from airlock.bundle.staging.pack import PackResult
from airlock.errors import (
    BundleError,
    BundleFormatError,
    IntegrityError,
    MissingVolumeError,
    SignatureError,
    SourceError,
    UnlistedFileError,
    UnsafePathError,
    UnsafeWeightsError,
)
from bundle_helpers import Staging, do_pack, write_spec


def _verify(
    dirs: list[Path], keys: KeyPair | None, *, partial: bool = False, allow_unsigned: bool = False
) -> VerifyReport:
    trust = [keys.public] if keys else []
    volumes = VolumeSet(dirs, trust=trust, allow_unsigned=allow_unsigned, workers=2)
    return verify(VerifyOptions(volumes, partial=partial))


def _all_entries(result: PackResult) -> list[tuple[int, str]]:
    return [(v.number, e.path) for v in result.manifest.volumes for e in v.entries]


def test_pack_writes_signed_self_describing_volumes(bundle: PackResult, keys: KeyPair) -> None:
    assert len(bundle.volumes) >= 3, "100 kB volumes must split a 160 kB GGUF"
    data = (bundle.volumes[0].path / layout.MANIFEST).read_bytes()
    for v in bundle.volumes:
        assert (v.path / layout.MANIFEST).read_bytes() == data
        index = json.loads((v.path / layout.VOLUME_INDEX).read_bytes())
        assert index["number"] == v.number and index["count"] == len(bundle.volumes)
        assert v.bytes <= 100_000
    manifest = Manifest.from_bytes(data)
    names = {(a.name, f.path) for a, f in manifest.iter_files()}
    assert ("smol", "tiny.gguf") in names and ("tiny", "model.safetensors") in names
    assert manifest.spec["models"][0]["name"] == "tiny"
    assert bundle.signed_by == keys.key_id
    parts = [e for v in manifest.volumes for e in v.entries if e.part is not None]
    assert parts, "the GGUF is larger than a volume, so it is split"


def test_verify_passes_and_hashes_everything(bundle: PackResult, keys: KeyPair) -> None:
    report = _verify([bundle.out], keys)
    assert report.ok, report.problems
    assert report.checked_bytes == bundle.manifest.total_stored_bytes()
    assert report.signed_by == keys.key_id
    report.raise_for_problems()


def test_volumes_mounted_in_different_places(bundle: PackResult, keys: KeyPair, tmp_path: Path) -> None:
    moved = []
    for v in bundle.volumes:
        target = tmp_path / f"mnt{v.number}" / "usb"
        target.parent.mkdir()
        os.rename(v.path, target)
        moved.append(target)
    assert _verify(list(reversed(moved)), keys).ok


def test_one_volume_checks_on_its_own_and_the_rest_are_missing(bundle: PackResult, keys: KeyPair) -> None:
    report = _verify([bundle.volumes[1].path], keys)
    assert report.missing == [v.number for v in bundle.volumes if v.number != 2]
    assert {p.kind for p in report.problems} == {"missing_volume"}
    with pytest.raises(MissingVolumeError) as info:
        report.raise_for_problems()
    assert info.value.exit_code == 16


def test_one_volume_with_partial_is_a_success(bundle: PackResult, keys: KeyPair) -> None:
    report = _verify([bundle.volumes[1].path], keys, partial=True)
    assert report.ok and report.missing and "--partial" in report.notes[-1]


def test_pack_is_reproducible(tmp_path: Path, staging: Staging, keys: KeyPair, bundle: PackResult) -> None:
    again = do_pack(staging.spec, tmp_path / "again", keys, volume_size=100_000)
    assert again.bundle == bundle.bundle


# -- bad input: each one a clear error naming the file, with its own exit code -------------------


def test_tampered_manifest(bundle: PackResult, keys: KeyPair) -> None:
    for v in bundle.volumes:
        path = v.path / layout.MANIFEST
        path.write_bytes(path.read_bytes().replace(b'"size":', b'"size":1', 1))
    with pytest.raises(SignatureError, match="changed after signing") as info:
        _verify([bundle.out], keys)
    assert info.value.exit_code == 12


def test_one_tampered_copy_of_the_manifest(bundle: PackResult, keys: KeyPair) -> None:
    path = bundle.volumes[-1].path / layout.MANIFEST
    path.write_bytes(path.read_bytes().replace(b"tiny", b"tinx", 1))
    report = _verify([bundle.out], keys)
    assert report.signed_by == keys.key_id, "the other copies verify"
    (problem,) = report.problems
    last = bundle.volumes[-1].number
    assert (problem.kind, problem.volume, problem.path) == ("corrupt", last, layout.MANIFEST)
    assert (
        problem.message
        == f"volume {last}: manifest.json is damaged: it differs from the signed copy (volume 1)"
    )
    with pytest.raises(IntegrityError):
        report.raise_for_problems()


def test_wrong_key(bundle: PackResult, other_keys: KeyPair, keys: KeyPair) -> None:
    with pytest.raises(SignatureError, match=f"signed by key {keys.key_id}, which is not trusted"):
        _verify([bundle.out], other_keys)


def test_unsigned_bundle_needs_allow_unsigned(tmp_path: Path, staging: Staging) -> None:
    result = do_pack(staging.spec, tmp_path / "unsigned", None)
    assert result.warnings and "not signed" in result.warnings[0]
    with pytest.raises(SignatureError, match="not signed"):
        _verify([result.out], None)
    report = _verify([result.out], None, allow_unsigned=True)
    assert report.ok and report.signed_by is None and "not signed" in report.notes[0]


def test_a_signature_from_nowhere_on_an_unsigned_bundle(
    tmp_path: Path, staging: Staging, other_keys: KeyPair
) -> None:
    result = do_pack(staging.spec, tmp_path / "unsigned", None)
    with pytest.raises(SignatureError):
        _verify([result.out], other_keys)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_flipped_byte_in_any_blob_is_found(bundle: PackResult, keys: KeyPair) -> None:
    """Every entry on every volume, flipped at its start, middle and end, is reported by name."""
    entries = _all_entries(bundle)
    assert len(entries) >= 4
    for number, rel in entries:
        path = bundle.out / layout.volume_name(number) / rel
        size = path.stat().st_size
        for offset in sorted({0, size // 2, size - 1}):
            _flip(path, offset)
            report = _verify([bundle.out], keys)
            bad = [p for p in report.problems if p.kind == "corrupt"]
            assert [(p.volume, p.path) for p in bad] == [(number, rel)], (rel, offset)
            assert bad[0].files, "the logical file is named"
            with pytest.raises(IntegrityError) as info:
                report.raise_for_problems()
            assert info.value.exit_code == 14
            _flip(path, offset)
    assert _verify([bundle.out], keys).ok


def test_truncated_blob(bundle: PackResult, keys: KeyPair) -> None:
    number, rel = _all_entries(bundle)[-1]
    path = bundle.out / layout.volume_name(number) / rel
    path.write_bytes(path.read_bytes()[:-1])
    report = _verify([bundle.out], keys)
    (problem,) = report.problems
    assert problem.kind == "corrupt" and "truncated" in problem.message and rel in problem.message


def test_missing_blob_file(bundle: PackResult, keys: KeyPair) -> None:
    number, rel = _all_entries(bundle)[0]
    (bundle.out / layout.volume_name(number) / rel).unlink()
    (problem,) = _verify([bundle.out], keys).problems
    assert problem.kind == "corrupt" and "is missing" in problem.message


def test_missing_volume(bundle: PackResult, keys: KeyPair) -> None:
    present = [v.path for v in bundle.volumes if v.number != 2]
    report = _verify(present, keys)
    assert report.missing == [2]
    (problem,) = report.problems
    assert problem.kind == "missing_volume" and problem.files


def test_extra_file(bundle: PackResult, keys: KeyPair) -> None:
    (bundle.volumes[0].path / "blobs" / "sha256" / "notes.txt").write_text("hello")
    report = _verify([bundle.out], keys)
    (problem,) = report.problems
    assert problem.kind == "unlisted" and "blobs/sha256/notes.txt" in problem.message
    with pytest.raises(UnlistedFileError) as info:
        report.raise_for_problems()
    assert info.value.exit_code == 15


def test_symlink_on_disk_is_never_followed(bundle: PackResult, keys: KeyPair, tmp_path: Path) -> None:
    number, rel = _all_entries(bundle)[0]
    path = bundle.out / layout.volume_name(number) / rel
    outside = tmp_path / "outside"
    os.rename(path, outside)
    os.symlink(outside, path)  # same content, but through a link: refused, never read
    report = _verify([bundle.out], keys)
    assert [p.kind for p in report.problems] == ["unsafe_path"]
    with pytest.raises(UnsafePathError) as info:
        report.raise_for_problems()
    assert info.value.exit_code == 13


def test_symlinked_folder_on_disk(bundle: PackResult, keys: KeyPair, tmp_path: Path) -> None:
    blobs = bundle.volumes[0].path / "blobs"
    os.rename(blobs, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", blobs)
    assert "unsafe_path" in {p.kind for p in _verify([bundle.out], keys).problems}


def test_symlinked_manifest_is_refused(bundle: PackResult, keys: KeyPair, tmp_path: Path) -> None:
    m = bundle.volumes[0].path / layout.MANIFEST
    os.rename(m, tmp_path / "m.json")
    os.symlink(tmp_path / "m.json", m)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        _verify([bundle.volumes[0].path], keys)


def _resign(bundle: PackResult, keys: KeyPair, edit) -> None:  # type: ignore[no-untyped-def]
    """Change the manifest and sign it again with the real key: only the path checks can stop it."""
    raw = json.loads((bundle.volumes[0].path / layout.MANIFEST).read_bytes())
    edit(raw)
    data = canonical_json(raw)
    sig = sign(load_private_key(keys.private), data, MANIFEST_CONTEXT)
    for v in bundle.volumes:
        (v.path / layout.MANIFEST).write_bytes(data)
        (v.path / layout.SIGNATURE).write_bytes(sig)


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "a/../../../b"])
def test_dotdot_and_absolute_paths_in_a_signed_manifest(bundle: PackResult, keys: KeyPair, path: str) -> None:
    _resign(bundle, keys, lambda raw: raw["artifacts"][0]["files"][0].__setitem__("path", path))
    with pytest.raises(UnsafePathError, match="unsafe path") as info:
        _verify([bundle.out], keys)
    assert info.value.exit_code == 13


def test_a_volume_path_leaving_the_volume_in_a_signed_manifest(bundle: PackResult, keys: KeyPair) -> None:
    _resign(
        bundle, keys, lambda raw: raw["volumes"][0]["entries"][0].__setitem__("path", "../../../etc/shadow")
    )
    with pytest.raises(UnsafePathError):
        _verify([bundle.out], keys)


def test_volume_index_that_disagrees_with_the_manifest(bundle: PackResult, keys: KeyPair) -> None:
    path = bundle.volumes[0].path / layout.VOLUME_INDEX
    raw = json.loads(path.read_bytes())
    raw["entries"] = raw["entries"][:-1]
    path.write_bytes(canonical_json(raw))
    (problem,) = _verify([bundle.out], keys).problems
    assert problem.message == (
        "volume 1's index (volume.json) is damaged: it does not match the signed manifest's entry for volume 1"
    )


def test_volumes_of_two_bundles(tmp_path: Path, staging: Staging, keys: KeyPair, bundle: PackResult) -> None:
    other = do_pack(staging.spec, tmp_path / "other", keys, volume_size=200_000)
    with pytest.raises(BundleFormatError, match="belongs to another bundle"):
        _verify([bundle.volumes[0].path, other.volumes[0].path], keys)


def test_not_a_bundle(tmp_path: Path, keys: KeyPair) -> None:
    with pytest.raises(BundleFormatError, match="not a bundle volume") as info:
        _verify([tmp_path], keys)
    assert info.value.exit_code == 11


# -- pack's own refusals -------------------------------------------------------------------------


def test_pickle_weights_are_refused_unless_allowed(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    (staging.model_dir / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UnsafeWeightsError, match=r"pytorch_model\.bin"):
        do_pack(staging.spec, tmp_path / "b1", keys)
    result = do_pack(staging.spec, tmp_path / "b2", keys, allow_pickle=True)
    assert any(f.path == "pytorch_model.bin" for _, f in result.manifest.iter_files())


def test_a_malformed_safetensors_header_stops_pack(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    path = staging.model_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(UnsafeWeightsError, match=r"model 'tiny': model\.safetensors"):
        do_pack(staging.spec, tmp_path / "b", keys)
    assert not list((tmp_path / "b").glob("vol-*")), "nothing is written before the checks pass"


def test_a_truncated_gguf_stops_pack(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    staging.gguf.write_bytes(staging.gguf.read_bytes()[:-100])
    with pytest.raises(UnsafeWeightsError, match=r"tiny\.gguf"):
        do_pack(staging.spec, tmp_path / "b", keys)


def test_a_symlinked_folder_in_a_source_is_refused(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    os.symlink(tmp_path, staging.model_dir / "escape")
    with pytest.raises(SourceError, match="link to a folder"):
        do_pack(staging.spec, tmp_path / "b", keys)


def test_a_missing_source(tmp_path: Path, keys: KeyPair) -> None:
    spec = write_spec(
        tmp_path / "s.yaml", {"models": [{"name": "m", "gguf": "nope.gguf", "engine": {"kind": "llamacpp"}}]}
    )
    with pytest.raises(SourceError, match=r"nope\.gguf"):
        do_pack(spec, tmp_path / "b", keys)


def test_pack_refuses_a_foreign_out_folder(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "thesis.tex").write_text("mine")
    with pytest.raises(BundleError, match="not empty"):
        do_pack(staging.spec, tmp_path / "b", keys)
    assert (tmp_path / "b" / "thesis.tex").read_text() == "mine"


def test_volume_too_small_for_its_metadata(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    with pytest.raises(BundleError, match="too small"):
        do_pack(staging.spec, tmp_path / "b", keys, volume_size=2_000)


def test_a_changed_sbom_is_reported(bundle: PackResult, keys: KeyPair) -> None:
    sbom = bundle.volumes[0].path / layout.SBOM
    sbom.write_bytes(sbom.read_bytes().replace(b"CycloneDX", b"CycloneDx", 1))
    (problem,) = _verify([bundle.out], keys).problems
    assert problem.kind == "corrupt" and "sbom.cdx.json is not the one the manifest names" in problem.message


def test_empty_files_and_odd_names_travel(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    (staging.model_dir / "empty.txt").write_bytes(b"")
    (staging.model_dir / "sub dir").mkdir()
    (staging.model_dir / "sub dir" / "naïve ünïcode.json").write_text("{}")
    result = do_pack(staging.spec, tmp_path / "b", keys, volume_size=100_000)
    paths = {f.path for _, f in result.manifest.iter_files()}
    assert {"empty.txt", "sub dir/naïve ünïcode.json"} <= paths
    assert _verify([result.out], keys).ok


def test_a_model_named_like_the_wheels_artifact(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    spec = write_spec(
        tmp_path / "s.yaml",
        {
            "models": [{"name": "files", "gguf": str(staging.gguf), "engine": {"kind": "llamacpp"}}],
            "files": [{"path": str(staging.model_dir / "config.json")}],
        },
    )
    result = do_pack(spec, tmp_path / "b", keys)
    assert sorted((a.kind, a.name) for a in result.manifest.artifacts) == [
        ("files", "files"),
        ("model", "files"),
    ]


def test_a_file_name_that_is_not_utf8_is_refused(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    with open(os.path.join(os.fsencode(staging.model_dir), b"bad-\xff.json"), "wb") as fh:
        fh.write(b"{}")
    with pytest.raises(UnsafePathError, match="not valid UTF-8"):
        do_pack(staging.spec, tmp_path / "b", keys)


def test_out_inside_a_source_folder_is_refused(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    with pytest.raises(BundleError, match=r"the output folder .* is inside"):
        do_pack(staging.spec, staging.model_dir / "bundle", keys)
    assert not (staging.model_dir / "bundle").exists(), "refused before anything was written"
