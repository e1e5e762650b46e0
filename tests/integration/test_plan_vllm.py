"""The plan's KV capacity equals what real vLLM (the CPU build) logs, for tiny models of different shapes.

Each model is written with random weights by transformers in vLLM's own environment (the shared
``airlock.testing.write_tiny_llama``, any config class); vLLM is
started with a fixed VLLM_CPU_KVCACHE_SPACE and stopped as soon as it has logged
"KV cache size: N tokens, Maximum concurrency for L tokens per request: C x". Without a ``--dtype``
of its own, vLLM runs with the plan's (the dtype this host's CPU computes fast), as serve starts it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from airlock.engines.base import free_port
from airlock.engines.process import stop_group
from airlock.plan import PlanOptions, plan, read_facts

# name -> (transformers config class, config kwargs, torch dtype, max_model_len, extra vLLM flags)
SHAPES: dict[str, tuple[str, dict[str, object], str, int, list[str]]] = {
    # GQA, bf16, a length that is a multiple of vLLM's CPU block (128)
    "llama-gqa-bf16": ("LlamaConfig", {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "intermediate_size": 256}, "bfloat16", 1024, []),
    # MQA (1 kv head), fp16, head_dim 64, a length that is not a multiple of the block
    "qwen2-mqa-fp16": ("Qwen2Config", {"num_hidden_layers": 3, "hidden_size": 512, "num_attention_heads": 8,
                       "num_key_value_heads": 1, "intermediate_size": 512}, "float16", 1000, []),
    # float32 checkpoint served as float32, explicit head_dim 128 larger than hidden / heads
    "qwen3-fp32-hd128": ("Qwen3Config", {"num_hidden_layers": 6, "hidden_size": 128, "num_attention_heads": 4,
                         "num_key_value_heads": 4, "head_dim": 128, "intermediate_size": 256}, "float32", 2048,
                         ["--dtype", "float32"]),
    # the same GQA model with an fp8 KV cache: half the bytes per token, twice the tokens
    "llama-gqa-fp8-kv": ("LlamaConfig", {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4,
                         "num_key_value_heads": 2, "intermediate_size": 256}, "bfloat16", 1024,
                         ["--kv-cache-dtype", "fp8"]),
    # a sliding window on every layer (Mistral v0.1 style): one sliding group, capped at the window
    "mistral-sliding": ("MistralConfig", {"num_hidden_layers": 3, "hidden_size": 128, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 256, "sliding_window": 512}, "bfloat16",
                        2048, []),
    # Gemma-2: sliding and full layers alternate (vLLM's hybrid allocator: one group of each kind)
    "gemma2-hybrid": ("Gemma2Config", {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4,
                      "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 256, "sliding_window": 256,
                      "tie_word_embeddings": True}, "bfloat16", 2048, []),
    # DeepSeek-V2 MLA (kv_lora_rank + qk_rope_head_dim per token and layer, one latent "head") with MoE
    "deepseek-v2-mla": ("DeepseekV2Config", {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 4,
                        "num_key_value_heads": 4, "intermediate_size": 256, "moe_intermediate_size": 64,
                        "n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1,
                        "first_k_dense_replace": 1, "kv_lora_rank": 64, "q_lora_rank": None,
                        "qk_rope_head_dim": 16, "qk_nope_head_dim": 32, "v_head_dim": 32}, "bfloat16", 2048, []),
}  # fmt: skip

_LOG = re.compile(
    r"KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"
)


def _logged_capacity(
    vllm_python: Path, folder: Path, max_len: int, extra: list[str], log_path: Path
) -> tuple[int, float]:
    """Start vLLM, read its KV line, stop it; returns (tokens, concurrency)."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    argv = [
        str(vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
        "--host", "127.0.0.1", "--port", str(free_port()), "--max-model-len", str(max_len),
        "--enforce-eager",  # with a fixed KV space vLLM then skips the compile warm-up: same KV, minutes faster
        *extra,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                m = _LOG.search(log_path.read_text(errors="replace"))
                if m:
                    assert int(m.group(2).replace(",", "")) == max_len
                    return int(m.group(1).replace(",", "")), float(m.group(3))
                if proc.poll() is not None:
                    break
                time.sleep(1)
            tail = log_path.read_text(errors="replace")[-3000:]
            pytest.fail(f"vLLM logged no KV cache size (exit {proc.poll()}):\n{tail}")
        finally:
            stop_group(proc, 30)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("name", list(SHAPES))
def test_predicted_kv_capacity_equals_vllm_log(
    name: str, tmp_path: Path, vllm_python: Path, tiny_model: Callable[..., Path]
) -> None:
    cls_name, kwargs, dtype, max_len, extra = SHAPES[name]
    shape = ["--arch", cls_name, "--config-json", json.dumps(kwargs), "--dtype", dtype]
    folder = tiny_model(tmp_path / name, *shape)
    facts = read_facts(folder)
    assert facts.weight_bytes > 0 and facts.param_count > 0
    dtype_flag = extra[extra.index("--dtype") + 1] if "--dtype" in extra else None
    kv_dtype = extra[extra.index("--kv-cache-dtype") + 1] if "--kv-cache-dtype" in extra else "auto"
    predicted = plan(
        facts,
        PlanOptions(
            cpu=True, cpu_kv_space_gib=1, max_model_len=max_len, vllm_version="0.32.0", dtype=dtype_flag,
            kv_cache_dtype=kv_dtype,
        ),
    )  # fmt: skip
    # vLLM runs with the plan's --dtype, as serve starts it (on the CPU: the dtype this host computes fast)
    run_dtype = ["--dtype", predicted.settings.dtype] if predicted.settings.dtype else []
    assert bool(run_dtype) == (dtype_flag is None)
    tokens, concurrency = _logged_capacity(
        vllm_python, folder, max_len, [*extra, *run_dtype], tmp_path / f"{name}.log"
    )
    print(f"{name}: predicted {predicted.capacity.tokens:,} tokens / {predicted.capacity.max_concurrency:.2f}x, "
          f"vLLM logged {tokens:,} / {concurrency:.2f}x", file=sys.stderr)  # fmt: skip
    assert predicted.capacity.tokens == tokens
    if name == "gemma2-hybrid":
        assert [g.kind for g in predicted.layout.groups] == ["sliding", "full"]
    if name == "deepseek-v2-mla":
        assert facts.mla is not None and predicted.layout.bytes_per_token == 2 * (64 + 16) * 2
    assert round(predicted.capacity.max_concurrency, 2) == pytest.approx(concurrency, abs=0.005)
