"""The dtype vLLM's CPU build runs fast with on this host: bfloat16 only with AVX512-BF16 or AMX.

vLLM's CPU backend computes bfloat16 with native instructions where the CPU has them (``avx512_bf16``,
or Intel AMX's ``amx_bf16``); elsewhere its bfloat16 path falls back to a slow emulation, and
float32 is the fast choice (at twice the memory). Measured on this project's machines: bf16 ran at
42 tokens/s single stream and 425 at 32 users on an AVX512-BF16 host, and fell back to the slow path
on an AVX2-only one. ``plan`` recommends it (the reason shown) and serve uses it when the spec sets
no ``dtype``.

Example::

    cpu_dtype(host_cpu_flags())        # CpuDtype(dtype='float32', reason='this CPU has no AVX512-BF16 ...')
    cpu_dtype(frozenset({"avx512_bf16"})).dtype   # 'bfloat16'
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo's names: AVX512-BF16, AMX with bf16


@dataclass(frozen=True)
class CpuDtype:
    dtype: str  # bfloat16 | float32
    reason: str


def read_cpu_flags(cpuinfo: Path) -> frozenset[str]:
    """The CPU's feature flags: the first ``flags`` line of a /proc/cpuinfo (empty when unreadable)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@cache
def host_cpu_flags() -> frozenset[str]:
    """This host's CPU flags (read once)."""
    return read_cpu_flags(CPUINFO)


def cpu_dtype(flags: frozenset[str]) -> CpuDtype:
    """bfloat16 where the CPU computes it natively, else float32; with the reason, for the plan's notes."""
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return CpuDtype("bfloat16", f"this CPU has {' and '.join(found)}: vLLM computes bfloat16 natively")
    if not flags:
        return CpuDtype(
            "float32",
            "this CPU's flags are unknown (no /proc/cpuinfo): float32, as without AVX512-BF16 or AMX",
        )
    return CpuDtype(
        "float32",
        "this CPU has no AVX512-BF16 or AMX: vLLM's bfloat16 would fall back to a slow path; "
        "float32 runs fast at twice the memory",
    )
