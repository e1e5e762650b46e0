"""The OCI image layout and wire types: blobs placed safely, names resolved, platforms chosen."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import pytest

from airlock.errors import ConfigError, IntegrityError, StoreError, UnsafePathError
from airlock.registry.oci import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    ImageIndex,
    ImageManifest,
    OciLayout,
    parse_config,
    parse_manifest,
)
from airlock.testing.tiny_images import write_image, write_index

BASE = {"etc/os-release": b"ID=tiny\n"}
APP = {"opt/app/version": b"1\n"}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_layout_rebuilt_blob_by_blob_reads_in_skopeo(skopeo: str, layout: Path, tmp_path: Path) -> None:
    digest = write_image(layout, "app:1", [BASE, APP], env={"CUDA_VERSION": "12.4.1"}, entrypoint=["/bin/x"])
    src = OciLayout.open(layout)
    found = src.manifest(digest)
    assert isinstance(found, ImageManifest)
    config = parse_config(src.read_blob(found.config.digest))
    assert config.platform == "linux/amd64"
    assert config.config is not None and config.config.env_dict() == {"CUDA_VERSION": "12.4.1"}
    assert config.config.entrypoint == ["/bin/x"]

    out = OciLayout.create(tmp_path / "out")
    for blob in [digest, found.config.digest, *(layer.digest for layer in found.layers)]:
        out.add_blob(blob, src.blob_path(blob))
    out.set_ref(
        Descriptor(media_type=OCI_MANIFEST, digest=digest, size=len(src.read_blob(digest))), "vllm:v1"
    )
    assert out.resolve("vllm:v1").digest == digest
    info = json.loads(
        subprocess.run(
            [skopeo, "inspect", f"oci:{out.root}:vllm:v1"], check=True, capture_output=True, timeout=60
        ).stdout
    )
    assert info["Digest"] == digest
    # same file system: the blob is a hard link, not a second copy
    assert out.blob_path(digest).stat().st_ino == src.blob_path(digest).stat().st_ino


def test_set_ref_replaces_an_older_image_of_that_name(layout: Path) -> None:
    v1 = write_image(layout, "a", [APP])
    v2 = write_image(layout, "b", [BASE])
    oci = OciLayout.open(layout)
    oci.set_ref(oci.resolve("b"), "a")
    assert oci.refs()["a"].digest == v2
    names = [m["annotations"][REF_NAME] for m in json.loads((layout / "index.json").read_text())["manifests"]]
    assert sorted(names) == ["a", "b"]
    assert v1 != v2


def test_unknown_names_and_missing_blobs_are_named(layout: Path) -> None:
    write_image(layout, "app:1", [APP])
    oci = OciLayout.open(layout)
    with pytest.raises(StoreError, match=r"no image named 'nope' \(it has: app:1\)"):
        oci.resolve("nope")
    with pytest.raises(StoreError, match="is not in the layout"):
        oci.set_ref(Descriptor(media_type=OCI_MANIFEST, digest="sha256:" + "1" * 64, size=1), "x")
    with pytest.raises(StoreError, match="not an OCI image layout"):
        OciLayout.open(layout / "blobs")


@pytest.mark.parametrize(
    "digest", ["sha256:../../../etc/passwd", "sha256:" + "A" * 64, "sha512:" + "0" * 64, "sha256:" + "0" * 63]
)
def test_a_digest_that_is_not_sha256_hex_never_becomes_a_path(layout: Path, digest: str) -> None:
    oci = OciLayout.create(layout)
    with pytest.raises(UnsafePathError, match="is not a sha256"):
        oci.blob_path(digest)


def test_a_streamed_blob_that_does_not_match_leaves_nothing(layout: Path) -> None:
    oci = OciLayout.create(layout)
    claimed = _digest(b"the real bytes")
    with pytest.raises(IntegrityError, match=claimed):
        oci.add_blob_stream(claimed, io.BytesIO(b"other bytes"))
    assert list(oci.blobs.iterdir()) == []
    oci.add_blob_stream(claimed, io.BytesIO(b"the real bytes"))
    assert oci.blob_path(claimed).read_bytes() == b"the real bytes"


def test_a_copied_blob_is_checked(tmp_path: Path) -> None:
    # /dev/shm is another file system here, so add_blob copies (and checks) instead of linking
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system to copy across")
    oci = OciLayout.create(shm / f"airlock-test-{tmp_path.name}")
    try:
        src = tmp_path / "blob"
        src.write_bytes(b"content")
        with pytest.raises(IntegrityError):
            oci.add_blob(_digest(b"other"), src)
        assert list(oci.blobs.iterdir()) == []
        placed = oci.add_blob(_digest(b"content"), src)
        assert placed.read_bytes() == b"content" and placed.stat().st_ino != src.stat().st_ino
    finally:
        import shutil

        shutil.rmtree(oci.root)


def test_an_index_resolves_per_platform(layout: Path) -> None:
    index, per = write_index(layout, "multi", {"linux/amd64": [BASE], "linux/arm64/v8": [BASE, APP]})
    oci = OciLayout.open(layout)
    assert isinstance(oci.manifest(index), ImageIndex)
    assert oci.image_for("multi", "linux/amd64").digest == per["linux/amd64"]
    assert oci.image_for("multi", "linux/arm64").digest == per["linux/arm64/v8"]
    assert oci.image_for("multi", "linux/arm64/v8").digest == per["linux/arm64/v8"]
    with pytest.raises(ConfigError, match=r"no linux/s390x image \(it has: linux/amd64, linux/arm64/v8\)"):
        oci.image_for("multi", "linux/s390x")
    with pytest.raises(ConfigError, match="not OS/ARCH"):
        oci.image_for("multi", "amd64")


def test_docker_schema2_manifests_parse() -> None:
    raw = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": _digest(b"c"),
            "size": 1,
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": _digest(b"l"),
                "size": 1,
            }
        ],
    }
    found = parse_manifest(json.dumps(raw).encode())
    assert isinstance(found, ImageManifest) and found.layers[0].digest == _digest(b"l")
    with pytest.raises(IntegrityError, match="does not parse"):
        parse_manifest(b'{"schemaVersion": 2, "mediaType": "text/plain"}')
    with pytest.raises(IntegrityError, match="does not parse"):
        parse_manifest(
            json.dumps({**raw, "layers": [{"digest": "sha256:x", "size": 1, "mediaType": "m"}]}).encode()
        )
