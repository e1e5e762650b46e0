"""A plan as plain data (for ``--json`` and for tests), in bytes and counts, no formatting.

Example::

    json.dumps(plan_to_dict(p))   # {"model": {...}, "hardware": {...}, "memory_per_gpu": {...}, ...}
"""

from __future__ import annotations

import math
from typing import Any

from airlock.plan.facts import ModelFacts
from airlock.plan.hardware import Hardware
from airlock.plan.kv import Capacity, KvLayout
from airlock.plan.llamacpp import LlamaCppPlan
from airlock.plan.memory import Budget
from airlock.plan.planner import Plan


def plan_to_dict(p: Plan) -> dict[str, Any]:
    """The whole plan, section by section: model, hardware, settings, memory, KV cache, checks, verdict."""
    return {
        "engine": "vllm",
        "model": _model(p.facts),
        "hardware": _hardware(p.hardware),
        "vllm_version": p.vllm_version,
        "tensor_parallel_size": p.tp,
        "pipeline_parallel_size": p.pp,
        "dtype": p.dtype,
        "kv_cache_dtype": p.kv_dtype,
        "max_model_len": p.max_model_len,
        "gpu_memory_utilization": None if p.hardware.is_cpu else p.utilization,
        "memory_per_gpu": _memory(p.budget),
        "kv_cache": _kv_cache(p.layout, p.capacity),
        **_checks(p),
        "fits": p.fits,
        "informational": p.informational,
        "problems": list(p.problems),
        "notes": list(p.notes),
        "suggestions": list(p.suggestions),
        "engine_args": list(p.engine_args),
    }


def _model(f: ModelFacts) -> dict[str, Any]:
    """The model's facts: shape, layer kinds, sizes, dtype and quantization."""
    return {
        "source": str(f.source),
        "format": f.format,
        "architecture": f.architecture,
        "layers": f.num_layers,
        "hidden_size": f.hidden_size,
        "attention_heads": f.num_heads,
        "kv_heads": f.num_kv_heads,
        "head_dim": f.head_dim,
        "mla": None
        if f.mla is None
        else {"kv_lora_rank": f.mla.kv_lora_rank, "qk_rope_head_dim": f.mla.qk_rope_head_dim},
        "layer_kinds": {k: f.layer_kinds.count(k) for k in sorted(set(f.layer_kinds))},
        "sliding_window": f.sliding_window,
        "experts": f.num_experts,
        "vocab_size": f.vocab_size,
        "parameters": f.param_count,
        "weight_bytes": f.weight_bytes,
        "checkpoint_dtype": f.dtype,
        "quantization": None if f.quant is None else f.quant.method,
        "config_max_model_len": f.max_model_len,
    }


def _hardware(hw: Hardware) -> dict[str, Any]:
    """The target: GPU name and count, memory and where that number comes from."""
    return {
        "name": hw.name,
        "catalog_key": hw.key,
        "count": hw.count,
        "memory_bytes_per_gpu": hw.memory_bytes,
        "memory_source": hw.memory_source,
        "compute_capability": hw.cc_text if hw.compute_capability else None,
        "cpu": hw.is_cpu,
    }


def _memory(b: Budget) -> dict[str, Any]:
    """Memory per GPU in bytes, from the total down to what is left for the KV cache."""
    return {
        "total": b.total,
        "requested": b.requested,
        "weights": b.weights,
        "activation_peak": b.activation,
        "non_torch": b.non_torch,
        "cuda_graphs": b.cuda_graphs,
        "kv_cache": b.kv_bytes,
        "max_num_batched_tokens": b.batched_tokens,
        "max_num_seqs": b.max_num_seqs,
        "profiled_sampler": b.sampler,
    }


def _kv_cache(lay: KvLayout, c: Capacity) -> dict[str, Any]:
    """KV cache layout per token and block, and the capacity in blocks, tokens and sequences."""
    return {
        "bytes_per_token_per_gpu": lay.bytes_per_token,
        "bytes_per_token_per_layer": lay.token_bytes_per_layer,
        "kv_heads_per_gpu": lay.kv_heads_per_gpu,
        "kv_head_replicas": lay.replicated,
        "block_size": lay.block_size,
        "groups": [g.kind for g in lay.groups],
        "num_blocks": c.num_blocks,
        "capacity_tokens": c.tokens,
        "max_concurrent_sequences": None if math.isinf(c.max_concurrency) else round(c.max_concurrency, 2),
    }


def _checks(p: Plan) -> dict[str, Any]:
    """The parallel sizes tried and the compatibility checks (architecture, quantization, driver)."""
    return {
        "tensor_parallel": [
            {"size": t.size, "ok": t.ok, "reasons": list(t.reasons), "notes": list(t.notes)}
            for t in p.tp_checks
        ],
        "pipeline_parallel": [{"size": t.size, "ok": t.ok, "reasons": list(t.reasons)} for t in p.pp_checks],
        "architecture_support": {
            "ok": p.support.ok,
            "release": p.support.release,
            "message": p.support.message,
        },
        "quantization": None
        if p.quant is None
        else {"ok": p.quant.ok, "native": p.quant.native, "message": p.quant.message},
        "driver": None
        if p.driver is None
        else {"level": p.driver.level, "cuda": p.driver.cuda, "message": p.driver.message},
    }


def llamacpp_plan_to_dict(p: LlamaCppPlan) -> dict[str, Any]:
    """A llama.cpp plan: the model, the context llama.cpp allocates, its memory against the host's RAM."""
    return {
        "engine": "llama.cpp",
        "model": _model(p.facts),
        "ctx_size": p.ctx_size,
        "parallel": p.options.parallel,
        "tokens_per_slot": p.tokens_per_slot,
        "cache_type_k": p.options.cache_type_k,
        "cache_type_v": p.options.cache_type_v,
        "memory": {
            "weights_bytes": p.file_bytes,
            "kv_cache_bytes": p.kv_bytes,
            "total_bytes": p.total_bytes,
            "host_ram_bytes": p.ram_bytes,
        },
        "fits": p.fits,
        "problems": list(p.problems),
        "notes": list(p.notes),
        "llama_server_args": list(p.args),
    }
