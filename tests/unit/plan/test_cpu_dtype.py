"""The dtype plan recommends on vLLM's CPU build: bfloat16 only with AVX512-BF16 or AMX, the reason shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.plan import PlanOptions, plan
from airlock.plan.cpu import cpu_dtype, read_cpu_flags
from airlock.plan.facts import from_config

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512_bf16 amx_tile
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu
"""
CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "vocab_size": 100, "max_position_embeddings": 256, "torch_dtype": "bfloat16"}  # fmt: skip


def test_flags_are_read_from_the_first_processor(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    flags = read_cpu_flags(tmp_path / "cpuinfo")
    assert "avx512_bf16" in flags and "fpu" in flags and len(flags) == 9
    assert read_cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("flags", "dtype", "words"),
    [({"avx512_bf16"}, "bfloat16", "has avx512_bf16"), ({"amx_bf16", "avx512_bf16"}, "bfloat16", "avx512_bf16 and amx_bf16"),
     ({"avx2", "avx512f"}, "float32", "no AVX512-BF16 or AMX"), (set(), "float32", "unknown")],
)  # fmt: skip
def test_the_cpu_dtype_and_its_reason(flags: set[str], dtype: str, words: str) -> None:
    choice = cpu_dtype(frozenset(flags))
    assert choice.dtype == dtype and words in choice.reason


def test_a_cpu_plan_takes_the_cpu_dtype_and_says_why() -> None:
    facts = from_config(CONFIG, path=Path("m"))
    slow = plan(facts, PlanOptions(cpu=True, cpu_kv_space_gib=1, cpu_flags=frozenset({"avx2"})))
    fast = plan(facts, PlanOptions(cpu=True, cpu_kv_space_gib=1, cpu_flags=frozenset({"avx512_bf16"})))
    assert (slow.dtype, fast.dtype) == ("float32", "bfloat16")
    assert (
        slow.budget.weights == 2 * fast.budget.weights
    )  # float32 holds the bf16 checkpoint in twice the bytes
    assert "--dtype" in slow.engine_args and any("no AVX512-BF16" in n for n in slow.notes)
    asked = plan(facts, PlanOptions(cpu=True, dtype="bfloat16", cpu_flags=frozenset({"avx2"})))
    assert asked.dtype == "bfloat16" and "--dtype" not in asked.engine_args
    assert any("--dtype float32 recommended" in n for n in asked.notes)
    gpu = plan(facts, PlanOptions(gpu="h100-80gb", cpu_flags=frozenset({"avx2"})))
    assert gpu.dtype == "bfloat16" and not any("dtype" in n for n in gpu.notes)  # a GPU plan ignores the CPU
