"""docker_load into a real dockerd (in its own network namespace, loopback only): tags set, image IDs
equal to config digests, shared layers loaded once, a corrupt blob loads nothing. The dockerd is the
session's one (``docker_host`` in conftest.py)."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from airlock.errors import IntegrityError
from airlock.registry.docker_load import docker_load
from airlock.registry.oci import ImageManifest, OciLayout
from airlock.registry.push import BlobSource
from airlock.testing.tiny_images import write_image

pytestmark = pytest.mark.integration

BASE = {"etc/os-release": b"ID=tiny\n"}


def _inspect(host: str, ref: str) -> dict[str, object]:
    out = subprocess.run(
        ["docker", "-H", host, "image", "inspect", ref], check=True, capture_output=True, timeout=60
    )
    found: list[dict[str, object]] = json.loads(out.stdout)
    return found[0]


def _config(layout: OciLayout, digest: str) -> str:
    found = layout.manifest(digest)
    assert isinstance(found, ImageManifest)
    return found.config.digest


def test_images_load_with_their_config_digest_as_id(docker_host: str, tmp_path: Path) -> None:
    d1 = write_image(tmp_path / "l", "a", [BASE, {"opt/v": b"1"}], env={"CUDA_VERSION": "12.4.1"}, cmd=["/x"])
    d2 = write_image(tmp_path / "l", "b", [BASE, {"opt/v": b"2"}])
    layout = OciLayout.open(tmp_path / "l")
    loaded = docker_load(
        layout, [(d1, "reg.local/team/a:1"), (d2, "reg.local/team/b:2")], docker_host=docker_host
    )
    assert loaded == ["reg.local/team/a:1", "reg.local/team/b:2"]
    a = _inspect(docker_host, "reg.local/team/a:1")
    assert a["Id"] == _config(layout, d1)
    assert a["RepoTags"] == ["reg.local/team/a:1"]
    assert a["Config"]["Env"] == ["CUDA_VERSION=12.4.1"]  # type: ignore[index]
    b = _inspect(docker_host, "reg.local/team/b:2")
    assert b["Id"] == _config(layout, d2)
    assert a["RootFS"]["Layers"][0] == b["RootFS"]["Layers"][0]  # type: ignore[index]


def test_a_corrupt_layer_loads_nothing(docker_host: str, tmp_path: Path) -> None:
    digest = write_image(tmp_path / "l", "c", [BASE, {"opt/v": b"corrupt-test"}])
    layout = OciLayout.open(tmp_path / "l")
    found = layout.manifest(digest)
    assert isinstance(found, ImageManifest)
    layer = found.layers[1]
    data = bytearray(layout.blob_path(layer.digest).read_bytes())
    data[-5] ^= 0x01
    bad = BlobSource(layer.digest, layer.size, lambda: io.BytesIO(bytes(data)))
    with pytest.raises(IntegrityError, match=layer.digest):
        docker_load(
            layout, [(digest, "reg.local/team/c:1")], docker_host=docker_host, sources={layer.digest: bad}
        )
    gone = subprocess.run(
        ["docker", "-H", docker_host, "image", "inspect", "reg.local/team/c:1"],
        capture_output=True,
        timeout=60,
    )
    assert gone.returncode != 0
