"""install --docker into a real dockerd: the bundle's image loaded under the spec's tag, its ID the
config digest, recorded in the store, and run by serve's vllm engine from there."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from airlock.bundle.airgap.images import ImageTargets
from airlock.bundle.airgap.install import InstallOptions, install
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import generate_keypair
from airlock.store.store import Store
from airlock.testing.tiny_images import write_image
from bundle_helpers import do_pack, write_spec


def test_install_loads_the_bundles_images_into_docker(docker_host: str, tmp_path: Path) -> None:
    keys = generate_keypair(tmp_path / "keys" / "k.key")
    layout = tmp_path / "layout"
    digest = write_image(layout, "team/app:1.0", [{"etc/os-release": b"ID=tiny\n"}, {"app/v": b"1"}])
    spec = write_spec(tmp_path / "airlock.yaml", {"images": [f"oci:{layout}:team/app:1.0"]})
    bundle = do_pack(spec, tmp_path / "bundle", keys, image_cache=tmp_path / "cache").out
    targets = ImageTargets(docker=True, docker_host=docker_host)
    result = install(
        InstallOptions(VolumeSet([bundle], trust=[keys.public]), store=tmp_path / "store", images=targets)
    )
    (placed,) = result.images
    assert placed.digest == digest and [(t.kind, t.reference) for t in placed.targets] == [
        ("docker", "team/app:1.0")
    ]
    inspected = json.loads(
        subprocess.run(
            ["docker", "-H", docker_host, "image", "inspect", "team/app:1.0"], check=True, capture_output=True
        ).stdout
    )[0]
    config = json.loads((layout / "blobs/sha256" / digest[7:]).read_bytes())["config"]["digest"]
    assert inspected["Id"] == config
    assert Store(tmp_path / "store").load_db().image_location("team/app:1.0") == "team/app:1.0"
