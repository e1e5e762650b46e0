"""Which kind of cache each layer keeps: full attention, a sliding window, chunked local, or SSM state.

Configs say it in many ways; these are the ones vLLM's model classes read:

- ``layer_types``: ["sliding_attention", "full_attention", "linear_attention", "mamba", ...] (newer
  transformers configs: Gemma 3, gpt-oss, Qwen3-Next, Qwen2 with sliding windows);
- Gemma 2: every even layer slides; Gemma 3 before ``layer_types``: ``sliding_window_pattern`` N means
  every N-th layer is global;
- Mistral v0.1-style: ``sliding_window`` on every layer; Qwen2-style only with ``use_sliding_window``;
- Llama 4: ``no_rope_layers`` (1 = chunked local attention of ``attention_chunk_size``);
- hybrids: ``layers_block_type`` (Jamba), ``hybrid_override_pattern`` (Nemotron-H: M, *, -),
  ``attn_layer_indices`` (Bamba), ``full_attention_interval`` (Qwen3-Next).

Example::

    layer_kinds({"model_type": "gemma2", "sliding_window": 4096}, 4)
    # LayerKinds(kinds=('sliding', 'full', 'sliding', 'full'), sliding_window=4096, attention_chunk=None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_TYPE_NAMES = {
    "full_attention": "full", "attention": "full", "global": "full",
    "sliding_attention": "sliding", "sliding_window": "sliding", "local": "sliding",
    "chunked_attention": "chunked",
    "linear_attention": "mamba", "mamba": "mamba", "mamba2": "mamba", "ssm": "mamba",
}  # fmt: skip


@dataclass(frozen=True)
class LayerKinds:
    """Per layer, the cache it keeps; the window and chunk only where some layer uses them."""

    kinds: tuple[str, ...]  # full, sliding, chunked, mamba, none
    sliding_window: int | None = None
    attention_chunk: int | None = None


def layer_kinds(cfg: dict[str, Any], layers: int) -> LayerKinds:
    """The kind of every layer, read the way vLLM's model class for this config reads it."""
    window = cfg.get("sliding_window") if isinstance(cfg.get("sliding_window"), int) else None
    chunk = cfg.get("attention_chunk_size") if isinstance(cfg.get("attention_chunk_size"), int) else None
    model_type = str(cfg.get("model_type") or "")
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        kinds = tuple(_TYPE_NAMES.get(str(t), "full") for t in types)
        return LayerKinds(kinds, window if "sliding" in kinds else None, chunk)
    if model_type in ("gemma2", "cohere2") and window:
        return LayerKinds(tuple("sliding" if i % 2 == 0 else "full" for i in range(layers)), window, None)
    pattern = cfg.get("sliding_window_pattern")
    if model_type.startswith("gemma3") and window and isinstance(pattern, int) and pattern > 0:
        return LayerKinds(
            tuple("full" if (i + 1) % pattern == 0 else "sliding" for i in range(layers)), window, None
        )
    no_rope = cfg.get("no_rope_layers")
    if chunk and isinstance(no_rope, list) and len(no_rope) == layers:
        return LayerKinds(tuple("chunked" if flag else "full" for flag in no_rope), None, chunk)
    hybrid = _hybrid(cfg, layers)
    if hybrid is not None:
        return LayerKinds(hybrid, None, None)
    uses_window = window is not None and cfg.get("use_sliding_window", model_type != "qwen2")
    if uses_window and window and window < int(cfg.get("max_position_embeddings") or 1 << 62):
        return LayerKinds(tuple("sliding" for _ in range(layers)), window, None)
    if model_type in ("mamba", "mamba2", "falcon_mamba", "rwkv"):
        return LayerKinds(tuple("mamba" for _ in range(layers)), None, None)
    return LayerKinds(tuple("full" for _ in range(layers)), None, None)


def _hybrid(cfg: dict[str, Any], layers: int) -> tuple[str, ...] | None:
    block_types = cfg.get("layers_block_type")
    if isinstance(block_types, list) and len(block_types) == layers:
        return tuple("full" if t == "attention" else "mamba" if t == "mamba" else "none" for t in block_types)
    pattern = cfg.get("hybrid_override_pattern")
    if isinstance(pattern, str) and len(pattern) == layers:
        return tuple({"M": "mamba", "*": "full"}.get(c, "none") for c in pattern)
    indices = cfg.get("attn_layer_indices")
    if isinstance(indices, list) and indices:
        return tuple("full" if i in indices else "mamba" for i in range(layers))
    period, offset = cfg.get("attn_layer_period"), cfg.get("attn_layer_offset")
    if isinstance(period, int) and isinstance(offset, int) and period > 0:
        return tuple("full" if i % period == offset else "mamba" for i in range(layers))
    interval = cfg.get("full_attention_interval")
    if isinstance(interval, int) and interval > 0:
        return tuple("full" if (i + 1) % interval == 0 else "mamba" for i in range(layers))
    return None


def mamba_state_bytes(cfg: dict[str, Any], dtype_bytes: int) -> int:
    """Approximate SSM state per layer per sequence (conv state + recurrent state), before tensor parallelism.

    Mamba2-style: conv (d_conv - 1) x (d_inner + 2 * n_groups * d_state) and ssm n_heads x head_dim x d_state.
    Gated DeltaNet (Qwen3-Next): conv (k - 1) x (2 * k_heads * k_dim + v_heads * v_dim) and
    v_heads x k_dim x v_dim. vLLM keeps both in the model dtype unless told otherwise.
    """
    if isinstance(cfg.get("linear_num_value_heads"), int):
        kh, vh = int(cfg.get("linear_num_key_heads") or 16), int(cfg["linear_num_value_heads"])
        kd, vd = int(cfg.get("linear_key_head_dim") or 128), int(cfg.get("linear_value_head_dim") or 128)
        conv = (int(cfg.get("linear_conv_kernel_dim") or 4) - 1) * (2 * kh * kd + vh * vd)
        return (conv + vh * kd * vd) * dtype_bytes
    hidden = int(cfg.get("hidden_size") or 0)
    d_state = int(cfg.get("mamba_d_state") or cfg.get("ssm_state_size") or cfg.get("state_size") or 128)
    d_conv = int(cfg.get("mamba_d_conv") or cfg.get("conv_kernel") or 4)
    expand = int(cfg.get("mamba_expand") or cfg.get("expand") or 2)
    d_inner = int(cfg.get("mamba_d_ssm") or cfg.get("intermediate_size") or expand * hidden)
    groups = int(cfg.get("mamba_n_groups") or cfg.get("n_groups") or 1)
    n_heads = cfg.get("mamba_n_heads")
    head_dim = cfg.get("mamba_head_dim") or cfg.get("mamba_d_head")
    if isinstance(n_heads, int) and isinstance(head_dim, int):
        ssm = n_heads * head_dim * d_state
    else:
        ssm = d_inner * d_state  # Mamba1: one state per channel
    conv = (d_conv - 1) * (d_inner + 2 * groups * d_state)
    return (conv + ssm) * dtype_bytes
