"""KV bytes and capacity for the shapes vLLM treats differently: GQA replication, fp8, sliding windows, hybrids."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest

from airlock.plan.facts import ModelFacts
from airlock.plan.kv import blocks_per_request, capacity, kv_layout, max_len_that_fits
from airlock.plan.parallel import stage_layers


def test_gqa_replication_and_fp8(load_facts: Callable[[str], ModelFacts]) -> None:
    llama = load_facts("llama-3.1-8b-instruct")  # 8 kv heads
    assert kv_layout(llama, tp=1, pp=1, kv_dtype="auto", block_size=16).bytes_per_token == 32 * 8 * 256 * 2
    at16 = kv_layout(llama, tp=16, pp=1, kv_dtype="auto", block_size=16)
    assert at16.kv_heads_per_gpu == 1 and at16.replicated == 2
    assert kv_layout(llama, tp=1, pp=1, kv_dtype="fp8", block_size=16).bytes_per_token == 32 * 8 * 256


def test_pipeline_stage_split_like_vllm() -> None:
    kinds = tuple("full" for _ in range(10))
    sizes = [len(stage_layers(kinds, 4, s)) for s in range(4)]
    assert sum(sizes) == 10 and sizes[-1] == 2 and max(sizes) == 3


def test_sliding_window_groups_and_capacity(load_facts: Callable[[str], ModelFacts]) -> None:
    base = load_facts("llama-3.1-8b-instruct")
    kinds = tuple("full" if (i + 1) % 6 == 0 else "sliding" for i in range(30))  # Gemma-3 style 5:1
    gemma = replace(base, num_layers=30, layer_kinds=kinds, sliding_window=1024)
    layout = kv_layout(gemma, tp=1, pp=1, kv_dtype="auto", block_size=16)
    assert layout.group_size == 5 and len(layout.groups) == 6
    assert [g.kind for g in layout.groups].count("sliding") == 5
    per_req = blocks_per_request(layout, 32768, 8192)
    # one full group at 32,768 tokens + five sliding groups capped at window - 1 + batch
    assert per_req == 2048 + 5 * (math.ceil((1024 - 1 + 8192) / 16) + 1)
    cap = capacity(layout, 10 << 30, max_model_len=32768, batched_tokens=8192, concurrency_log=True)
    assert cap.num_blocks == (10 << 30) // layout.bytes_per_block
    assert cap.tokens == int(cap.num_blocks / per_req * 32768)
    old = capacity(layout, 10 << 30, max_model_len=32768, batched_tokens=8192, concurrency_log=False)
    assert old.tokens == cap.num_blocks // 6 * 16


def test_hybrid_mamba_raises_the_block_size(load_facts: Callable[[str], ModelFacts]) -> None:
    base = load_facts("llama-3.1-8b-instruct")
    kinds = tuple("full" if i % 8 == 4 else "mamba" for i in range(32))
    hybrid = replace(base, layer_kinds=kinds, mamba_state_bytes=4 << 20)
    layout = kv_layout(hybrid, tp=1, pp=1, kv_dtype="auto", block_size=16)
    assert layout.mamba_layers == 28
    assert layout.block_size % 16 == 0 and layout.block_size * layout.token_bytes_per_layer >= 4 << 20
    assert [g.kind for g in layout.groups].count("mamba") == 7
    assert blocks_per_request(layout, 4096, 2048) == math.ceil(4096 / layout.block_size) + 7


def test_max_len_that_fits_is_the_largest(load_facts: Callable[[str], ModelFacts]) -> None:
    layout = kv_layout(load_facts("llama-3.1-8b-instruct"), tp=1, pp=1, kv_dtype="auto", block_size=16)
    budget = 1 << 30
    n = max_len_that_fits(layout, budget, 2048, 131072)
    assert blocks_per_request(layout, n, 2048) <= budget // layout.bytes_per_block
    assert blocks_per_request(layout, n + 16, 2048) > budget // layout.bytes_per_block
    assert n == pytest.approx(8192, abs=16)
