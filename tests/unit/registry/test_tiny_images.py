"""The tiny OCI images that image tests build on are valid for skopeo and umoci, and deterministic."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from airlock.testing.tiny_images import write_image, write_index, write_oci_archive

BASE = {"etc/os-release": b"ID=tiny\n", "usr/share/doc/readme": b"tiny base layer\n"}
APP_V1 = {"opt/app/version": b"1\n"}
APP_V2 = {"opt/app/version": b"2\n"}


def _inspect(skopeo: str, ref: str, *extra: str) -> dict[str, object]:
    out = subprocess.run([skopeo, "inspect", *extra, ref], check=True, capture_output=True, timeout=60)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_skopeo_reads_an_image_with_its_digest_config_and_layers(skopeo: str, layout: Path) -> None:
    digest = write_image(
        layout, "app:1", [BASE, APP_V1], env={"CUDA_VERSION": "12.4.1"}, labels={"x": "y"}, entrypoint=["/a"]
    )
    info = _inspect(skopeo, f"oci:{layout}:app:1")
    assert info["Digest"] == digest
    assert info["Architecture"] == "amd64"
    assert info["Env"] == ["CUDA_VERSION=12.4.1"]
    assert info["Labels"] == {"x": "y"}
    assert len(info["Layers"]) == 2  # type: ignore[arg-type]


def test_umoci_unpacks_the_files(umoci: str, layout: Path, tmp_path: Path) -> None:
    write_image(layout, "app", [BASE, APP_V1])
    bundle = tmp_path / "bundle"
    subprocess.run(
        [umoci, "unpack", "--rootless", "--image", f"{layout}:app", str(bundle)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert (bundle / "rootfs" / "opt/app/version").read_bytes() == b"1\n"
    assert (bundle / "rootfs" / "etc/os-release").read_bytes() == b"ID=tiny\n"


def test_versions_share_layers_and_same_files_give_same_digest(
    skopeo: str, layout: Path, tmp_path: Path
) -> None:
    v1 = write_image(layout, "app:1", [BASE, APP_V1])
    v2 = write_image(layout, "app:2", [BASE, APP_V2])
    again = write_image(tmp_path / "other", "app:1", [BASE, APP_V1])
    assert v1 != v2
    assert again == v1
    l1 = _inspect(skopeo, f"oci:{layout}:app:1")["Layers"]
    l2 = _inspect(skopeo, f"oci:{layout}:app:2")["Layers"]
    assert isinstance(l1, list) and isinstance(l2, list)
    assert l1[0] == l2[0] and l1[1] != l2[1]
    refs = [
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in json.loads((layout / "index.json").read_text())["manifests"]
    ]
    assert sorted(refs) == ["app:1", "app:2"]


def test_rewriting_a_ref_replaces_it(layout: Path) -> None:
    write_image(layout, "app", [APP_V1])
    v2 = write_image(layout, "app", [APP_V2])
    manifests = json.loads((layout / "index.json").read_text())["manifests"]
    assert [m["digest"] for m in manifests] == [v2]


def test_an_index_resolves_per_platform(skopeo: str, layout: Path) -> None:
    index, per = write_index(layout, "multi", {"linux/amd64": [BASE], "linux/arm64/v8": [BASE, APP_V1]})
    assert set(per) == {"linux/amd64", "linux/arm64/v8"}
    raw = json.loads(
        subprocess.run(
            [skopeo, "inspect", "--raw", f"oci:{layout}:multi"], check=True, capture_output=True, timeout=60
        ).stdout
    )
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert {m["digest"] for m in raw["manifests"]} == set(per.values())
    arm = _inspect(skopeo, f"oci:{layout}:multi", "--override-arch", "arm64", "--override-variant", "v8")
    assert arm["Digest"] == index  # skopeo names the index; the platform's image is what it describes
    assert arm["Architecture"] == "arm64"
    assert len(arm["Layers"]) == 2  # type: ignore[arg-type]


def test_an_oci_archive_reads_like_the_layout(skopeo: str, layout: Path, tmp_path: Path) -> None:
    digest = write_image(layout, "app:1", [BASE, APP_V1])
    archive = tmp_path / "app.tar"
    write_oci_archive(layout, archive)
    assert _inspect(skopeo, f"oci-archive:{archive}:app:1")["Digest"] == digest
