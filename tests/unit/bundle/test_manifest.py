"""The manifest's form: canonical JSON, safe paths, and consistent blobs, volumes and parts."""

from __future__ import annotations

import json

import pytest

from airlock.bundle.format.manifest import (
    Artifact,
    Blob,
    Entry,
    FileEntry,
    Manifest,
    Source,
    Volume,
    canonical_json,
)
from airlock.errors import BundleFormatError, UnsafePathError

SHA_A = "a" * 64
SHA_B = "b" * 64


def _manifest(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "format": "airlock-bundle/1",
        "created": "2025-01-01T00:00:00Z",
        "airlock_version": "0.1.0",
        "volume_size": 1000,
        "chunk_size": 100,
        "spec": {"models": []},
        "artifacts": [
            {
                "kind": "files",
                "name": "files",
                "source": {"type": "file"},
                "files": [{"path": "etc/a.txt", "size": 10, "sha256": SHA_A}],
            }
        ],
        "blobs": [{"sha256": SHA_A, "size": 10}],
        "volumes": [
            {
                "number": 1,
                "entries": [
                    {
                        "path": f"blobs/sha256/{SHA_A}",
                        "blob": SHA_A,
                        "length": 10,
                        "stored_size": 10,
                        "stored_sha256": SHA_A,
                    }
                ],
            }
        ],
    }
    data.update(overrides)
    return data


def _parse(data: dict[str, object]) -> Manifest:
    m = Manifest.model_validate(data)
    return Manifest.from_bytes(m.to_bytes())


def test_round_trip_is_canonical_and_stable() -> None:
    m = _parse(_manifest())
    assert m.to_bytes() == canonical_json(json.loads(m.to_bytes()))
    assert Manifest.from_bytes(m.to_bytes()).digest() == m.digest()
    assert b" " not in m.to_bytes().replace(b"etc/a.txt", b"")


def test_non_canonical_bytes_are_refused() -> None:
    data = Manifest.model_validate(_manifest()).to_bytes()
    pretty = json.dumps(json.loads(data), indent=2).encode()
    with pytest.raises(BundleFormatError, match="canonical"):
        Manifest.from_bytes(pretty)


def test_duplicate_keys_are_refused() -> None:
    data = Manifest.model_validate(_manifest()).to_bytes()
    doubled = data.replace(b'"created":', b'"created":"x","created":', 1)
    with pytest.raises(BundleFormatError, match="appears twice"):
        Manifest.from_bytes(doubled)


@pytest.mark.parametrize(
    "path",
    [
        "../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "./a",
        "a/./b",
        "C:/x",
        "a\\b",
        "",
        "a\x00b",
        "a/",
        "a\udcffb",
    ],
)
def test_unsafe_logical_paths_are_refused(path: str) -> None:
    bad = _manifest()
    bad["artifacts"][0]["files"][0]["path"] = path  # type: ignore[index]
    raw = json.dumps(bad, sort_keys=True, separators=(",", ":")).encode()  # escapes lone surrogates
    with pytest.raises(UnsafePathError, match="unsafe path"):
        Manifest.from_bytes(raw)


@pytest.mark.parametrize(
    "path", ["../x", f"blobs/sha256/../../{SHA_A}", "/tmp/x", "manifest.json", f"blobs/{SHA_A}"]
)
def test_unsafe_volume_paths_are_refused(path: str) -> None:
    bad = _manifest()
    bad["volumes"][0]["entries"][0]["path"] = path  # type: ignore[index]
    with pytest.raises(UnsafePathError):
        Manifest.from_bytes(canonical_json(bad))


def test_a_file_without_its_blob_is_refused() -> None:
    with pytest.raises(BundleFormatError, match="is not listed"):
        Manifest.from_bytes(canonical_json(_manifest(blobs=[{"sha256": SHA_B, "size": 10}])))


def test_parts_must_cover_the_blob_exactly() -> None:
    parts = [
        {"path": f"blobs/sha256/{SHA_A}.p0001", "blob": SHA_A, "part": 1, "offset": 0, "length": 4, "stored_size": 4, "stored_sha256": SHA_B},
        {"path": f"blobs/sha256/{SHA_A}.p0002", "blob": SHA_A, "part": 2, "offset": 5, "length": 5, "stored_size": 5, "stored_sha256": SHA_B},
    ]  # fmt: skip
    with pytest.raises(BundleFormatError, match="gap or overlap"):
        Manifest.from_bytes(canonical_json(_manifest(volumes=[{"number": 1, "entries": parts}])))


def test_volumes_are_numbered_in_order() -> None:
    v = _manifest()["volumes"][0]  # type: ignore[index]
    with pytest.raises(BundleFormatError, match="numbered"):
        Manifest.from_bytes(canonical_json(_manifest(volumes=[{**v, "number": 2}])))


def test_a_blob_listed_twice_or_a_path_twice_is_refused() -> None:
    with pytest.raises(BundleFormatError, match="twice"):
        Manifest.from_bytes(canonical_json(_manifest(blobs=[{"sha256": SHA_A, "size": 10}] * 2)))
    a = _manifest()["artifacts"][0]  # type: ignore[index]
    files = [{"path": "x", "size": 10, "sha256": SHA_A}, {"path": "x", "size": 10, "sha256": SHA_A}]
    with pytest.raises(BundleFormatError, match="twice"):
        Manifest.from_bytes(canonical_json(_manifest(artifacts=[{**a, "files": files}])))


def test_a_path_that_is_both_file_and_folder_is_refused() -> None:
    with pytest.raises(ValueError, match="both a file and a folder"):
        Artifact(
            kind="files", name="f", source=Source(type="file"),
            files=[FileEntry(path="a", size=1, sha256=SHA_A), FileEntry(path="a/b", size=1, sha256=SHA_A)],
        )  # fmt: skip


def test_big_entries_need_one_hash_per_chunk() -> None:
    entry = Entry(path=f"blobs/sha256/{SHA_A}", blob=SHA_A, length=250, stored_size=250, stored_sha256=SHA_A)
    with pytest.raises(ValueError, match="chunk hashes"):
        Manifest(
            created="x", airlock_version="0", volume_size=1000, chunk_size=100, spec={},
            artifacts=[], blobs=[Blob(sha256=SHA_A, size=250)], volumes=[Volume(number=1, entries=[entry])],
        )  # fmt: skip
