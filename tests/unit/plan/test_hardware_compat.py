"""GPU catalog and flags, architecture support per vLLM release, quantization per GPU, driver per image."""

from __future__ import annotations

import pytest

from airlock.errors import ConfigError
from airlock.plan import compat
from airlock.plan.hardware import GIB, cpu_hardware, parse_bytes, resolve_hardware
from airlock.plan.memory import sampler_path


def test_catalog_gpu_with_count() -> None:
    hw = resolve_hardware(gpu="h100-80gb:2")
    assert hw.count == 2 and hw.compute_capability == (9, 0)
    assert hw.memory_bytes / GIB == pytest.approx(79.18, abs=0.01)
    assert resolve_hardware(gpu="A100").key == "a100-80gb"


def test_plain_memory() -> None:
    hw = resolve_hardware(gpu_memory="80GiB", gpus=2)
    assert hw.memory_bytes == 80 * GIB and hw.count == 2 and hw.compute_capability is None
    assert parse_bytes("24GB") == 24 * 10**9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"gpu": "h900-1tb"}, "unknown GPU 'h900-1tb'"), ({"gpu": "h100:2", "gpus": 4}, "says 2 GPUs but --gpus says 4"),
     ({"gpu": "h100", "gpu_memory": "80GiB"}, "not both"), ({"gpu_memory": "lots"}, "not a memory size"),
     ({"gpu": "h100:zero"}, "whole number"), ({}, "no GPU given")],
)  # fmt: skip
def test_bad_hardware_flags(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_hardware(**kwargs)  # type: ignore[arg-type]


def test_architecture_support_by_release() -> None:
    assert compat.arch_support("LlamaForCausalLM", "0.6.6").ok
    qwen3 = compat.arch_support("Qwen3ForCausalLM", "0.6.6")
    assert not qwen3.ok and "arrives in vLLM" in qwen3.message and qwen3.first_release is not None
    assert compat.arch_support("Qwen3ForCausalLM", "0.9.2").ok
    assert "not in vLLM's model registry" in compat.arch_support("NoSuchForCausalLM", "0.11.0").message


def test_the_arch_table_records_its_source() -> None:
    releases = compat._archs()["releases"]
    assert len(releases) >= 5
    assert all("registry.py" in r["source"] for r in releases.values())


def test_quantization_against_gpu_generation() -> None:
    t4 = (7, 5)
    assert not compat.quant_check("awq_marlin", t4, "0.11.0").ok
    assert compat.quant_check("awq", t4, "0.11.0").ok
    a100 = compat.quant_check("fp8", (8, 0), "0.11.0")
    assert a100.ok and not a100.native and "weight-only" in a100.message
    assert compat.quant_check("fp8", (9, 0), "0.11.0").native
    assert not compat.quant_check("modelopt_fp4", (8, 0), "0.8.5").ok


def test_driver_against_image_cuda() -> None:
    assert compat.driver_runs("550.54.14", "0.6.6").level == "native"
    assert compat.driver_runs("550.54.14", "0.11.0").level == "minor-compat"
    no = compat.driver_runs("550.54.14", "0.22.0")
    assert no.level == "no" and "13.0" in no.message
    assert compat.newest_release_for_driver("550.54.14") == "0.8.5"
    with pytest.raises(ConfigError, match="not an NVIDIA driver version"):
        compat.driver_runs("latest", "0.11.0")


@pytest.mark.parametrize(
    ("version", "path"),
    [("0.6.4", "native"), ("0.8.5", "flashinfer"), ("0.9.2", "flashinfer"), ("0.11.0", "flashinfer"),
     ("0.11.1", "native"), ("0.19.1", "native"), ("0.22.0", "native"), ("0.33.0", "native")],
)  # fmt: skip
def test_sampler_that_each_release_profiles_with(version: str, path: str) -> None:
    # V0 has no V1 sampler; 0.8-0.11.0 images use FlashInfer by default; 0.11.1 made it opt-in; from 0.21
    # it is the default again, but profiling also warms the sort-based path, whose peak then counts.
    assert sampler_path(version, resolve_hardware(gpu="h100-80gb")) == path
    assert sampler_path(version, cpu_hardware(None)) == "native"
