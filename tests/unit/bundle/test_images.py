"""Container images in the bundle: resolved to a digest, shared layers carried once, bad input named."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.bundle.airgap.images import ImageTargets
from airlock.bundle.airgap.install import InstallOptions, InstallResult, install
from airlock.bundle.airgap.verify import VerifyOptions, verify
from airlock.bundle.format import layout as bundle_layout
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair
from airlock.bundle.staging.sources.image import parse_registry_ref
from airlock.errors import AirlockError, ConfigError, IntegrityError, StoreError
from airlock.registry.oci import OciLayout
from airlock.registry.pull import pull_image, source_target
from airlock.registry.push import RegistryTarget, layout_image, push_image
from airlock.store.store import Store
from airlock.testing.registry import RunningRegistry, free_port
from airlock.testing.tiny_images import write_image, write_index, write_oci_archive
from bundle_helpers import do_pack, write_spec
from harness import need

BASE = {"etc/os-release": b"ID=tiny\n", "bin/tool": b"\x7fELF" + bytes(range(256)) * 64}
CUDA_ENV = {"CUDA_VERSION": "12.8.1", "NVIDIA_REQUIRE_CUDA": "cuda>=12.8 brand=tesla,driver>=535"}


@pytest.fixture
def image_cache(tmp_path: Path) -> Path:
    return tmp_path / "image-cache"


@pytest.fixture
def skopeo_bin() -> str:
    return need("skopeo")


def _two_versions(root: Path) -> tuple[Path, str, str]:
    """One layout holding app:1 and app:2, which share the base layer and differ in the top one."""
    layout = root / "layout"
    v1 = write_image(layout, "app:1", [BASE, {"app/v": b"1"}], env=CUDA_ENV, entrypoint=["/bin/tool"])
    v2 = write_image(layout, "app:2", [BASE, {"app/v": b"2"}], env=CUDA_ENV, entrypoint=["/bin/tool"])
    return layout, v1, v2


def test_two_images_share_their_base_layer_once_and_keep_their_digests(
    tmp_path: Path, keys: KeyPair, image_cache: Path
) -> None:
    layout, v1, v2 = _two_versions(tmp_path)
    archive = tmp_path / "app2.tar"
    write_oci_archive(layout, archive)
    spec = write_spec(
        tmp_path / "airlock.yaml",
        {"images": [f"oci:{layout}:app:1", {"ref": "oci-archive:app2.tar:app:2"}]},
    )
    result = do_pack(spec, tmp_path / "bundle", keys, image_cache=image_cache)
    images = [a for a in result.manifest.artifacts if a.kind == "image"]
    assert [a.image.digest for a in images if a.image] == [v1, v2]
    first, second = (a.image for a in images)
    assert first is not None and second is not None
    assert first.layers[0] == second.layers[0] and first.layers[1] != second.layers[1]
    assert (first.cuda_version, first.nvidia_require_cuda) == ("12.8.1", CUDA_ENV["NVIDIA_REQUIRE_CUDA"])
    assert first.entrypoint == ["/bin/tool"] and first.platform == "linux/amd64"
    # each blob is listed once in the bundle, though both images name the base layer
    blobs = {b.sha256 for b in result.manifest.blobs}
    listed = [f.sha256 for a in images for f in a.files]
    assert len(blobs) == len(set(listed)) < len(listed)
    report = verify(VerifyOptions(VolumeSet([result.out], trust=[keys.public])))
    assert report.ok, report.problems


def test_a_multi_platform_index_gives_the_target_platform_and_records_both_digests(
    tmp_path: Path, keys: KeyPair, image_cache: Path
) -> None:
    layout = tmp_path / "layout"
    index, per_platform = write_index(
        layout, "multi:1", {"linux/amd64": [BASE], "linux/arm64/v8": [{"arm": b"64"}]}
    )
    spec = write_spec(tmp_path / "airlock.yaml", {"images": [f"oci:{layout}:multi:1"]})
    result = do_pack(spec, tmp_path / "bundle", keys, image_cache=image_cache, platform="linux/arm64")
    (artifact,) = result.manifest.artifacts
    assert artifact.image is not None
    assert (artifact.image.index_digest, artifact.image.digest) == (index, per_platform["linux/arm64/v8"])
    assert artifact.image.platform == "linux/arm64/v8"
    with pytest.raises(ConfigError, match=r"no linux/s390x image \(it has: linux/amd64, linux/arm64/v8\)"):
        do_pack(spec, tmp_path / "bundle2", keys, image_cache=image_cache, platform="linux/s390x")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("vllm/vllm-openai", "has neither a tag nor a digest"),
        ("vllm/vllm-openai@sha256:abc", "is not a sha256:<64 hex> digest"),
        ("Bad/Name:1", "is not a valid repository name"),
    ],
)
def test_a_reference_must_pin_a_tag_or_digest(ref: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_registry_ref(ref)


def test_references_are_normalized_as_docker_does() -> None:
    assert str(parse_registry_ref("ubuntu:24.04")) == "docker.io/library/ubuntu:24.04"
    assert str(parse_registry_ref("vllm/vllm-openai:v0.11.0")) == "docker.io/vllm/vllm-openai:v0.11.0"
    ref = parse_registry_ref("127.0.0.1:5000/team/app:1.2@sha256:" + "a" * 64)
    assert (ref.registry, ref.repository, ref.tag) == ("127.0.0.1:5000", "team/app", "1.2")


def test_a_truncated_archive_and_a_damaged_layer_are_named(
    tmp_path: Path, keys: KeyPair, image_cache: Path
) -> None:
    layout, _, _ = _two_versions(tmp_path)
    archive = tmp_path / "app.tar"
    write_oci_archive(layout, archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    spec = write_spec(tmp_path / "airlock.yaml", {"images": ["oci-archive:app.tar:app:1"]})
    with pytest.raises(AirlockError, match=r"app\.tar"):
        do_pack(spec, tmp_path / "bundle", keys, image_cache=image_cache)

    manifest = json.loads((layout / "index.json").read_text())["manifests"][0]
    image = json.loads((layout / "blobs/sha256" / manifest["digest"].split(":")[1]).read_bytes())
    top = image["layers"][-1]["digest"]
    (layout / "blobs/sha256" / top.split(":")[1]).write_bytes(b"not the layer")
    spec = write_spec(tmp_path / "airlock.yaml", {"images": [f"oci:{layout}:app:1"]})
    with pytest.raises(IntegrityError, match=top):
        do_pack(spec, tmp_path / "bundle3", keys, image_cache=image_cache)
    assert not (image_cache / "blobs/sha256" / top.split(":")[1]).exists()


@pytest.fixture(scope="module")
def public_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry on 127.0.0.1 standing in for the public one (plain http), for this module."""
    need("docker-registry")
    with RunningRegistry(tmp_path_factory.mktemp("public-registry")) as registry:
        yield registry


def _publish(registry: RunningRegistry, layout: Path, name: str, repository: str, tag: str) -> str:
    data, media_type, blobs = layout_image(
        OciLayout.open(layout), OciLayout.open(layout).resolve(name).digest
    )
    return push_image(
        RegistryTarget(f"http://{registry.host}"), repository, tag, data, media_type, blobs
    ).digest


def test_an_image_from_a_registry_keeps_its_digest_and_a_second_pull_fetches_only_the_new_layer(
    tmp_path: Path, keys: KeyPair, image_cache: Path, public_registry: RunningRegistry
) -> None:
    layout, v1, v2 = _two_versions(tmp_path)
    assert _publish(public_registry, layout, "app:1", "team/app", "1") == v1
    assert _publish(public_registry, layout, "app:2", "team/app", "2") == v2
    host = public_registry.host
    spec = write_spec(
        tmp_path / "airlock.yaml", {"images": [{"ref": f"{host}/team/app:1", "tls_verify": False}]}
    )
    result = do_pack(spec, tmp_path / "bundle", keys, image_cache=image_cache)
    (artifact,) = result.manifest.artifacts
    assert artifact.image is not None
    assert (artifact.image.digest, artifact.image.repository, artifact.image.tag) == (
        v1,
        f"{host}/team/app",
        "1",
    )
    source = source_target(host, tls_verify=False)
    again = pull_image(source, "team/app", "2", OciLayout.open(image_cache))
    assert (again.manifest.digest, again.fetched_blobs, again.reused_blobs) == (v2, 2, 1)  # config + top

    missing = write_spec(
        tmp_path / "missing.yaml", {"images": [{"ref": f"{host}/team/app:3", "tls_verify": False}]}
    )
    with pytest.raises(StoreError, match=r"team/app has no image '3'"):
        do_pack(missing, tmp_path / "bundle2", keys, image_cache=image_cache)
    down = write_spec(
        tmp_path / "down.yaml",
        {"images": [{"ref": f"127.0.0.1:{free_port()}/team/app:1", "tls_verify": False}]},
    )
    with pytest.raises(StoreError, match=r"cannot reach the registry at 127\.0\.0\.1:\d+"):
        do_pack(down, tmp_path / "bundle3", keys, image_cache=image_cache)


def _install(bundle: Path, store: Path, keys: KeyPair, targets: ImageTargets) -> InstallResult:
    return install(
        InstallOptions(VolumeSet([bundle], trust=[keys.public], workers=2), store=store, images=targets)
    )


def test_install_places_images_in_the_store_a_registry_and_an_oci_layout_with_their_digests(
    tmp_path: Path, keys: KeyPair, image_cache: Path, skopeo_bin: str
) -> None:
    layout, v1, v2 = _two_versions(tmp_path)
    spec1 = write_spec(tmp_path / "one.yaml", {"images": [f"oci:{layout}:app:1"]})
    spec2 = write_spec(tmp_path / "two.yaml", {"images": [f"oci:{layout}:app:2"]})
    bundle1 = do_pack(spec1, tmp_path / "b1", keys, image_cache=image_cache).out
    bundle2 = do_pack(spec2, tmp_path / "b2", keys, image_cache=image_cache).out
    store = tmp_path / "store"
    with RunningRegistry(tmp_path / "internal") as internal:
        internal.stop()
        targets = ImageTargets(registry=RegistryTarget(f"http://{internal.host}"), oci=tmp_path / "oci-out")
        with pytest.raises(StoreError, match=f"cannot reach the registry at {internal.host}"):
            _install(bundle1, store, keys, targets)
        internal.start()
        first = _install(bundle1, store, keys, targets)  # the rerun finishes the job
        (placed,) = first.images
        assert (placed.digest, placed.pushed_blobs, placed.skipped_blobs) == (v1, 3, 0)
        assert [t.kind for t in placed.targets] == ["registry", "oci"]
        assert placed.targets[0].reference == f"{internal.host}/app@{v1}"
        raw = subprocess.run(
            [
                skopeo_bin,
                "inspect",
                "--raw",
                "--tls-verify=false",
                f"docker://{internal.host}/app@{v1}",
            ],
            capture_output=True,
            check=True,
        ).stdout
        assert OciLayout.open(layout).read_blob(v1) == raw
        assert OciLayout.open(tmp_path / "oci-out").resolve("app:1").digest == v1

        second = _install(bundle2, store, keys, targets)
        (placed2,) = second.images
        assert (placed2.digest, placed2.pushed_blobs, placed2.skipped_blobs) == (
            v2,
            2,
            1,
        )  # the base is there
    db = Store(store).load_db()
    assert {(i.digest, tuple(t.kind for t in i.targets)) for i in db.images} == {
        (v1, ("registry", "oci")),
        (v2, ("registry", "oci")),
    }
    assert db.image_location("app:2") == f"{internal.host}/app@{v2}"
    for image in db.images:  # every blob is in the store's own layout, checked
        for f in image.files:
            assert hashlib.sha256(Store(store).image_blob(f.sha256).read_bytes()).hexdigest() == f.sha256


def test_the_sbom_lists_each_image_as_a_container_with_its_blobs(
    tmp_path: Path, keys: KeyPair, image_cache: Path
) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    layout, v1, _ = _two_versions(tmp_path)
    spec = write_spec(tmp_path / "airlock.yaml", {"images": [f"oci:{layout}:app:1"]})
    result = do_pack(spec, tmp_path / "bundle", keys, image_cache=image_cache)
    data = (result.volumes[0].path / bundle_layout.SBOM).read_bytes()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode()) is None
    (container,) = [c for c in json.loads(data)["components"] if c["type"] == "container"]
    assert (
        container["version"] == v1
        and container["purl"] == f"pkg:oci/app@sha256%3A{v1[7:]}?repository_url=app&tag=1"
    )
    roles = sorted(c["description"] for c in container["components"])
    assert roles == ["config", "layer", "layer", "manifest"]
    props = {p["name"]: p["value"] for p in container["properties"]}
    assert props["airlock:nvidia-require-cuda"] == CUDA_ENV["NVIDIA_REQUIRE_CUDA"]


def test_compressed_layers_are_not_compressed_again(tmp_path: Path, keys: KeyPair, image_cache: Path) -> None:
    layout, _, _ = _two_versions(tmp_path)
    spec = write_spec(tmp_path / "airlock.yaml", {"images": [f"oci:{layout}:app:1"]})
    result = do_pack(spec, tmp_path / "bundle", keys, image_cache=image_cache, compress="zstd")
    (artifact,) = result.manifest.artifacts
    assert artifact.image is not None
    encodings = {b.sha256: b.encoding for b in result.manifest.blobs}
    assert {encodings[d[7:]] for d in artifact.image.layers} == {"raw"}  # gzip layers, carried as they are
    assert encodings[artifact.image.config_digest[7:]] == "zstd"  # the JSON config is compressed
    report = verify(VerifyOptions(VolumeSet([result.out], trust=[keys.public])))
    assert report.ok, report.problems


def test_a_docker_archive_is_read_through_skopeo(
    tmp_path: Path, keys: KeyPair, image_cache: Path, skopeo_bin: str
) -> None:
    """`docker save` output: skopeo converts it (its layers uncompressed), so the digest is this copy's."""
    layout, _, _ = _two_versions(tmp_path)
    archive = tmp_path / "App Saved.tar"
    subprocess.run(
        [skopeo_bin, "copy", "--quiet", f"oci:{layout}:app:1", f"docker-archive:{archive}:app:1"],
        check=True, capture_output=True,
    )  # fmt: skip
    spec = write_spec(tmp_path / "airlock.yaml", {"images": [f"docker-archive:{archive.name}"]})
    result = do_pack(spec, tmp_path / "bundle", keys, image_cache=image_cache)
    (artifact,) = result.manifest.artifacts
    assert artifact.image is not None and artifact.source.detail == "docker-archive"
    assert (artifact.image.repository, artifact.image.tag, artifact.image.platform) == (
        "app-saved", None, "linux/amd64"
    )  # fmt: skip
    assert len(artifact.image.layers) == 2
    report = verify(VerifyOptions(VolumeSet([result.out], trust=[keys.public])))
    assert report.ok, report.problems
