"""Compatibility checks against data files generated from vLLM releases (see scripts/gen_plan_tables.py).

- architecture support per release (``data/vllm_architectures.json``);
- quantization method vs the GPU's compute capability (``data/vllm_quantization.json``);
- which release's CUDA the host driver runs (``data/vllm_images.json``).

Example::

    arch_support("Qwen3ForCausalLM", "0.8.5")    # Support(ok=True, ...)
    driver_runs("550.54.14", "0.11.0")           # DriverCheck(level='minor-compat', cuda='12.8', ...)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from airlock.errors import ConfigError

# Hugging Face quant_method names -> the names vLLM's registry uses, newest spelling first.
_QUANT_ALIASES = {
    "awq": ("awq", "auto_awq", "awq_marlin"), "gptq": ("gptq", "auto_gptq", "gptq_marlin"),
    "compressed_tensors": ("compressed-tensors",), "modelopt_fp4": ("modelopt_fp4", "modelopt_nvfp4"),
    "nvfp4": ("modelopt_fp4",), "auto-round": ("auto-round", "inc"),
}  # fmt: skip
# Below these compute capabilities the method runs, but not natively (vLLM falls back to weight-only
# Marlin kernels for FP8 before Ada; FP4 needs Blackwell for native math).
_NATIVE_CC = {"fp8": 89, "fbgemm_fp8": 89, "modelopt": 89, "modelopt_fp4": 100, "mxfp4": 90}


def _data(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resources.files("airlock.plan").joinpath(f"data/{name}").read_text())
    return data


@cache
def _archs() -> dict[str, Any]:
    return _data("vllm_architectures.json")


@cache
def _quants() -> dict[str, Any]:
    return _data("vllm_quantization.json")


@cache
def images() -> dict[str, Any]:
    return _data("vllm_images.json")


def version_key(version: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", version.split("+")[0])
    if not nums:
        raise ConfigError(f"--vllm-version {version!r} is not a version like 0.11.0")
    return tuple(int(n) for n in nums[:3]) + (0,) * (3 - len(nums[:3]))


def nearest_release(version: str, table: dict[str, Any]) -> str:
    """The newest release in ``table`` not newer than ``version`` (or the oldest one)."""
    wanted = version_key(version)
    older = [v for v in table if version_key(v) <= wanted]
    return max(older, key=version_key) if older else min(table, key=version_key)


def latest_release() -> str:
    releases: dict[str, Any] = _archs()["releases"]
    return max(releases, key=version_key)


@dataclass(frozen=True)
class Support:
    ok: bool
    release: str  # the release whose table answered
    category: str | None
    first_release: str | None  # the oldest tabled release that lists the architecture
    message: str


def arch_support(architecture: str, version: str) -> Support:
    releases: dict[str, Any] = _archs()["releases"]
    release = nearest_release(version, releases)
    table: dict[str, str] = releases[release]["architectures"]
    first = next(
        (v for v in sorted(releases, key=version_key) if architecture in releases[v]["architectures"]), None
    )
    exact = "" if release == version else f" (nearest tabled release {release})"
    if architecture in table:
        return Support(
            True, release, table[architecture], first, f"{architecture} is supported by vLLM {version}{exact}"
        )
    if first is not None and version_key(first) > version_key(release):
        message = f"{architecture} arrives in vLLM {first}; {version} does not know it{exact}"
    elif first is not None:
        message = f"{architecture} was dropped before vLLM {release}{exact}"
    else:
        message = (
            f"{architecture} is not in vLLM's model registry in any tabled release ({', '.join(releases)})"
        )
    return Support(False, release, None, first, message)


@dataclass(frozen=True)
class QuantCheck:
    ok: bool
    native: bool
    min_capability: int | None
    message: str


def quant_check(method: str, cc: tuple[int, int] | None, version: str) -> QuantCheck:
    releases: dict[str, Any] = _quants()["releases"]
    release = nearest_release(version, releases)
    table: dict[str, int] = releases[release]["min_capability"]
    names = _QUANT_ALIASES.get(method.replace("-", "_"), (method,))
    min_cc = next((table[n] for n in (*names, method) if n in table), None)
    if min_cc is None:
        in_any = any(n in r["min_capability"] for r in releases.values() for n in names)
        known = "known to other vLLM releases" if in_any else "not among vLLM's quantization methods"
        return QuantCheck(False, False, None, f"quantization {method!r} is {known} (vLLM {release} table)")
    if cc is None:
        return QuantCheck(True, True, min_cc, f"{method} needs compute capability >= {min_cc / 10:.1f}")
    have = cc[0] * 10 + cc[1]
    if have < min_cc:
        return QuantCheck(
            False,
            False,
            min_cc,
            f"{method} needs compute capability >= {min_cc / 10:.1f}; this GPU has {have / 10:.1f}",
        )
    native = have >= _NATIVE_CC.get(method, 0)
    how = "" if native else f" (weight-only fallback below {_NATIVE_CC[method] / 10:.1f}: slower)"
    return QuantCheck(True, native, min_cc, f"{method} runs on compute capability {have / 10:.1f}{how}")


@dataclass(frozen=True)
class DriverCheck:
    level: str  # native | minor-compat | no | unknown
    cuda: str | None
    release: str
    message: str


def _driver_key(driver: str) -> tuple[int, ...]:
    if not re.fullmatch(r"\d+(\.\d+){0,2}", driver.strip()):
        raise ConfigError(f"--driver {driver!r} is not an NVIDIA driver version like 550.54.14")
    return tuple(int(p) for p in driver.strip().split("."))


def driver_runs(driver: str, version: str) -> DriverCheck:
    table = images()
    releases: dict[str, Any] = table["releases"]
    release = nearest_release(version, releases)
    cuda = str(releases[release]["cuda"])
    have = _driver_key(driver)
    native = table["cuda_drivers"]["native"].get(cuda)
    compat = table["cuda_drivers"]["minor_compat"].get(cuda.split(".")[0])
    if native and have >= _driver_key(native):
        return DriverCheck("native", cuda, release, f"driver {driver} runs CUDA {cuda} (needs >= {native})")
    if compat and have >= _driver_key(compat):
        return DriverCheck(
            "minor-compat", cuda, release,
            f"driver {driver} runs CUDA {cuda} only through minor-version compatibility (>= {compat}); "
            f"just-in-time compiled kernels may fail: {native} or newer runs it natively",
        )  # fmt: skip
    return DriverCheck(
        "no", cuda, release, f"driver {driver} cannot run CUDA {cuda}: it needs >= {compat or native}"
    )


def newest_release_for_driver(driver: str) -> str | None:
    """The newest tabled vLLM release whose CUDA this driver runs natively."""
    ok = [v for v in images()["releases"] if driver_runs(driver, v).level == "native"]
    return max(ok, key=version_key) if ok else None


def default_utilization(version: str) -> float:
    releases: dict[str, Any] = images()["releases"]
    return float(releases[nearest_release(version, releases)]["default_gpu_memory_utilization"])
