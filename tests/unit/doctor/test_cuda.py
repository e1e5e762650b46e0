"""The driver against each stored image's NVIDIA_REQUIRE_CUDA, on recorded GPUs; plan's driver table."""

from __future__ import annotations

from airlock.doctor.cuda import (
    HostCuda,
    brand_name,
    check_images,
    cuda_of_driver,
    native_driver,
    requirement_met,
)
from airlock.doctor.gpus import read_gpus
from airlock.store.db import StoreDb, StoredImage
from unit.doctor.recorded_host import RecordedHost

# NVIDIA_REQUIRE_CUDA of nvidia/cuda:12.8.1 (the base of vllm/vllm-openai:v0.11.0): cuda>=12.8, or a
# datacenter driver branch that the image's forward-compatibility libraries cover (shortened to 4 brands)
BRANDS = ("unknown", "grid", "tesla", "nvidia")
REQUIRE_128 = "cuda>=12.8 " + " ".join(
    f"brand={b},driver>={d},driver<{d + 1}" for d in (470, 535, 550, 560, 565) for b in BRANDS
)


def image(
    require: str | None, cuda: str | None = "12.8.1", ref: str = "vllm/vllm-openai:v0.11.0"
) -> StoredImage:
    return StoredImage(
        reference=ref, repository="docker.io/vllm/vllm-openai", tag=ref.rpartition(":")[2],
        digest="sha256:" + "a" * 64, media_type="application/vnd.oci.image.manifest.v1+json",
        platform="linux/amd64", size=1, cuda_version=cuda, nvidia_require_cuda=require, files=[],
        bundle="b" * 64, installed="2025-03-11T09:14:02Z",
    )  # fmt: skip


def checks_on(model: str, *images: StoredImage) -> dict[str, tuple[str, str, str]]:
    info = read_gpus(RecordedHost().with_gpus(model))
    return {c.name: (c.status, c.detail, c.fix) for c in check_images(StoreDb(images=list(images)), info)}


def test_native_cuda_passes() -> None:
    status, detail, _ = checks_on("l4", image(REQUIRE_128))["driver vs vllm/vllm-openai:v0.11.0"]
    assert status == "pass"
    assert "meets cuda>=12.8" in detail


def test_datacenter_driver_runs_it_through_forward_compatibility() -> None:
    for model in ("h100x2", "a100-mig"):  # 550 and 535 datacenter drivers, brand NVIDIA
        status, detail, _ = checks_on(model, image(REQUIRE_128))["driver vs vllm/vllm-openai:v0.11.0"]
        assert status == "pass", model
        assert "forward-compatibility" in detail


def test_geforce_driver_below_the_cuda_fails_with_both_ways_out() -> None:
    status, detail, fix = checks_on("rtx3090", image(REQUIRE_128))["driver vs vllm/vllm-openai:v0.11.0"]
    assert status == "fail"
    assert "brand geforce" in detail and "minor-version compatibility (driver >= 525.60.13)" in detail
    assert fix.startswith("upgrade the NVIDIA driver to 570.26 or newer (CUDA 12.8)")
    assert "NVIDIA_DISABLE_REQUIRE=1" in fix


def test_image_with_only_cuda_version_uses_plans_table() -> None:
    only = image(None, "12.8.1")
    assert checks_on("l4", only)["driver vs vllm/vllm-openai:v0.11.0"][0] == "pass"
    assert checks_on("h100x2", only)["driver vs vllm/vllm-openai:v0.11.0"][0] == "warn"  # 550: minor compat
    cuda13 = image(None, "13.0.0", ref="vllm/vllm-openai:v0.22.0")
    status, _, fix = checks_on("l4", cuda13)["driver vs vllm/vllm-openai:v0.22.0"]
    assert status == "fail" and "580.65.06" in fix


def test_no_cuda_images_and_no_driver() -> None:
    assert checks_on("l4")["driver vs images"][0] == "skip"
    none = check_images(StoreDb(images=[image(REQUIRE_128)]), read_gpus(RecordedHost()))
    assert [c.status for c in none] == ["fail"]
    assert "vllm/vllm-openai:v0.11.0" in none[0].detail


def test_requirement_grammar_and_table() -> None:
    host = HostCuda(driver="535.129.03", cuda="12.2", brand="tesla")
    assert (
        requirement_met("cuda>=12.8 brand=tesla,driver>=535,driver<536", host)
        == "brand=tesla,driver>=535,driver<536"
    )
    assert (
        requirement_met(
            "cuda>=12.8 brand=tesla,driver>=535,driver<536", HostCuda("535.129.03", "12.2", "geforce")
        )
        is None
    )
    assert requirement_met("cuda>=12.2", host) == "cuda>=12.2"
    assert brand_name("NVIDIA RTX") == "nvidiartx" and brand_name(None) == "unknown"
    assert native_driver("12.8") == "570.26"
    assert cuda_of_driver("570.124.06") == "12.8" and cuda_of_driver("400.1") is None
