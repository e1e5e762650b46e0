"""Images through the CLI as a user runs it: pack --platform, install --registry/--oci, ls, and errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from airlock.testing.registry import RunningRegistry
from airlock.testing.tiny_images import write_index
from bundle_helpers import write_spec
from harness import Cli


@pytest.fixture
def airlock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("AIRLOCK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRLOCK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "250")
    return Cli(capsys)


def test_pack_install_push_and_list_an_image(airlock: Cli, tmp_path: Path) -> None:
    if shutil.which("docker-registry") is None:
        if os.environ.get("CI"):
            pytest.fail("docker-registry is not installed (scripts/install-system-deps.sh installs it)")
        pytest.skip("docker-registry is not installed")
    layout = tmp_path / "layout"
    index, digests = write_index(
        layout,
        "vllm-openai:v0.11.0",
        {"linux/amd64": [{"a": b"amd"}], "linux/arm64/v8": [{"a": b"arm"}]},
        env={"CUDA_VERSION": "12.8.1", "NVIDIA_REQUIRE_CUDA": "cuda>=12.8"},
    )
    spec = write_spec(tmp_path / "airlock.yaml", {"images": [f"oci:{layout}:vllm-openai:v0.11.0"]})
    assert airlock("signing-key", "create").returncode == 0
    packed = airlock("pack", str(spec), "--out", str(tmp_path / "bundle"), "--platform", "linux/arm64")
    assert packed.returncode == 0, packed.stderr
    assert f"image oci:{layout}:vllm-openai:v0.11.0 {digests['linux/arm64/v8'][:19]}" in packed.stdout
    assert (
        f"(from index {index[:19]}) linux/arm64/v8" in packed.stdout and "needs cuda>=12.8" in packed.stdout
    )

    store = tmp_path / "store"
    (tmp_path / "home" / "trusted").mkdir()
    shutil.copy(
        tmp_path / "home" / "signing" / "airlock.key.pub", tmp_path / "home" / "trusted" / "staging.pub"
    )
    with RunningRegistry(tmp_path / "registry") as registry:
        done = airlock(
            "install", str(tmp_path / "bundle"), "--store", str(store),
            "--registry", f"http://{registry.host}", "--oci", str(tmp_path / "oci"), "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        (image,) = json.loads(done.stdout)["images"]
        assert image["digest"] == digests["linux/arm64/v8"]
        assert [t["reference"] for t in image["targets"]] == [
            f"{registry.host}/vllm-openai@{image['digest']}",
            f"{tmp_path / 'oci'}:vllm-openai:v0.11.0",
        ]
        served = httpx.get(
            f"{registry.url}/v2/vllm-openai/manifests/{image['digest']}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert served.status_code == 200 and hashlib.sha256(served.content).hexdigest() == image["digest"][7:]
    listed = airlock("ls", "--store", str(store))
    assert "vllm-openai:v0.11.0" in listed.stdout and "linux/arm64/v8" in listed.stdout
    assert f"registry: {registry.host}/vllm-openai@" in listed.stdout

    down = airlock(
        "install", str(tmp_path / "bundle"), "--store", str(store), "--registry", f"http://{registry.host}"
    )
    assert down.returncode != 0 and f"cannot reach the registry at {registry.host}" in down.stderr
    assert "Traceback" not in down.stderr


def test_an_unpinned_image_is_refused_before_anything_is_fetched(airlock: Cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "airlock.yaml", {"images": ["vllm/vllm-openai"]})
    done = airlock("pack", str(spec), "--out", str(tmp_path / "bundle"), "--no-sign")
    assert done.returncode == 2
    assert "image 'vllm/vllm-openai' has neither a tag nor a digest" in done.stderr
