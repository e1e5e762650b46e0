"""KV-cache bytes per token and the capacity of a KV budget, following vLLM's own accounting.

What vLLM does (v1 engine; read in vllm/v1/kv_cache_interface.py and vllm/v1/core/kv_cache_utils.py):

- A layer's page holds ``block_size`` tokens: ``block_size x kv_heads_per_rank x (head_size + head_size_v)
  x dtype bytes``, where ``kv_heads_per_rank = max(1, kv_heads // tp)`` (kv heads are replicated when
  tp exceeds them). MLA layers keep one latent per token, ``kv_lora_rank + qk_rope_head_dim`` wide, not
  split by tp (DeepSeek-V3 in bf16: 61 x 576 x 2 = 70,272 bytes per token). fp8 caches store 1 byte.
- Layers are put in groups of equal size by cache kind (full, sliding window, chunked local, SSM state);
  one block of the shared pool holds a page of every layer of one group, so
  ``num_blocks = available // (group_size x page)``.
- A request at ``max_model_len`` takes ``cdiv(len, block)`` blocks in each full-attention group, about
  ``cdiv(min(window - 1 + batched, len), block) + 1`` in each sliding group and one per SSM group.
- The logged "KV cache size: N tokens" is ``num_blocks // groups x block_size`` up to 0.21 and
  ``int(max_concurrency x max_model_len)`` from 0.22 on (``max_concurrency = num_blocks / blocks per request``).

Example::

    layout = kv_layout(facts, tp=8, pp=1, kv_dtype="auto", block_size=16)
    layout.bytes_per_token            # 40960 for Llama-3.1-70B in bf16
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from airlock.plan.facts import ModelFacts
from airlock.plan.parallel import stage_layers

KV_DTYPE_BYTES = {"fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1, "int8_per_token_head": 1,
                  "fp8_per_token_head": 1, "bfloat16": 2, "float16": 2, "float32": 4}  # fmt: skip
FP8_DS_MLA_BYTES = 656  # per token per layer: 512 fp8 latent + 4 fp32 scales + 64 bf16 rope dims


def kv_dtype_bytes(kv_dtype: str, model_dtype_bytes: int) -> int:
    if kv_dtype in ("auto", "", None):
        return model_dtype_bytes
    if kv_dtype == "fp8_ds_mla":
        return 1
    try:
        return KV_DTYPE_BYTES[kv_dtype]
    except KeyError:
        from airlock.errors import ConfigError

        raise ConfigError(
            f"--kv-cache-dtype {kv_dtype!r} is not one vLLM knows",
            hint="auto, fp8, fp8_e4m3, fp8_e5m2, bfloat16, float16",
        ) from None


@dataclass(frozen=True)
class CacheGroup:
    kind: str  # full | sliding | chunked | mamba
    window: int | None


@dataclass(frozen=True)
class KvLayout:
    kv_heads_per_gpu: int
    replicated: int  # how many ranks hold a copy of each kv head (1: none)
    token_bytes_per_layer: int  # one attention layer, one token, one GPU
    bytes_per_token: int  # all attention layers of the largest pipeline stage, one GPU, full length
    block_size: int
    page_bytes: int  # one layer's page (after unifying with SSM pages)
    group_size: int
    groups: tuple[CacheGroup, ...]
    mamba_layers: int

    @property
    def bytes_per_block(self) -> int:
        return self.group_size * self.page_bytes


def kv_layout(
    facts: ModelFacts,
    *,
    tp: int,
    pp: int,
    kv_dtype: str,
    block_size: int,
    model_dtype_bytes: int | None = None,
) -> KvLayout:
    dbytes = kv_dtype_bytes(kv_dtype, model_dtype_bytes or facts.dtype_bytes)
    if facts.mla is not None:
        heads, replicated = 1, tp
        per_layer = (
            FP8_DS_MLA_BYTES
            if kv_dtype == "fp8_ds_mla"
            else (facts.mla.kv_lora_rank + facts.mla.qk_rope_head_dim) * dbytes
        )
    else:
        heads = max(1, facts.num_kv_heads // tp)
        replicated = max(1, tp // facts.num_kv_heads)
        per_layer = heads * (facts.head_dim + facts.v_head_dim) * dbytes
    kinds = max((stage_layers(facts.layer_kinds, pp, s) for s in range(pp)), key=len)
    attn = [k for k in kinds if k in ("full", "sliding", "chunked")]
    mamba = kinds.count("mamba")
    bucket_counts: dict[str, int] = {}
    for k in kinds:
        if k != "none":
            bucket_counts[k] = bucket_counts.get(k, 0) + 1
    if not bucket_counts:
        return KvLayout(heads, replicated, per_layer, 0, block_size, 0, 0, (), 0)
    page = block_size * per_layer
    if mamba:
        state = max(1, facts.mamba_state_bytes // tp)
        if attn and state > page:
            align = 16
            block_size = align * math.ceil(state / (align * per_layer))
            page = block_size * per_layer
        page = max(page, state)
    counts = list(bucket_counts.values())
    group_size = min(counts)
    if max(counts) < group_size * 1.5:
        group_size = max(counts)
    groups: list[CacheGroup] = []
    for kind, count in bucket_counts.items():
        window = (
            facts.sliding_window
            if kind == "sliding"
            else facts.attention_chunk
            if kind == "chunked"
            else None
        )
        groups += [CacheGroup(kind, window)] * math.ceil(count / group_size)
    return KvLayout(
        kv_heads_per_gpu=heads,
        replicated=replicated,
        token_bytes_per_layer=per_layer,
        bytes_per_token=per_layer * len(attn),
        block_size=block_size,
        page_bytes=page,
        group_size=group_size,
        groups=tuple(groups),
        mamba_layers=mamba,
    )


@dataclass(frozen=True)
class Capacity:
    num_blocks: int
    blocks_per_request: int
    max_concurrency: float  # requests of max_model_len tokens that fit at once
    tokens: int  # what vLLM logs as "KV cache size: N tokens" for that release


def blocks_per_request(layout: KvLayout, max_model_len: int, batched_tokens: int) -> int:
    bs = layout.block_size
    total = 0
    for g in layout.groups:
        if g.kind == "full" or (g.window is None and g.kind != "mamba"):
            total += math.ceil(max_model_len / bs)
        elif g.kind == "sliding" and g.window is not None:
            total += math.ceil(min(g.window - 1 + batched_tokens, max_model_len) / bs) + 1
        elif g.kind == "chunked" and g.window is not None:
            total += math.ceil(min(g.window + batched_tokens, max_model_len) / bs)
        else:  # mamba: one state block per request
            total += 1
    return max(total, 1)


def capacity(
    layout: KvLayout, available_bytes: int, *, max_model_len: int, batched_tokens: int, concurrency_log: bool
) -> Capacity:
    """Blocks, concurrency and the logged token count for ``available_bytes`` of KV memory per GPU."""
    if layout.bytes_per_block == 0:
        return Capacity(0, 0, math.inf, 0)
    num_blocks = max(0, available_bytes) // layout.bytes_per_block
    per_request = blocks_per_request(layout, max_model_len, batched_tokens)
    concurrency = num_blocks / per_request
    if concurrency_log:
        tokens = int(concurrency * max_model_len)
    else:
        tokens = num_blocks // len(layout.groups) * layout.block_size
    return Capacity(num_blocks, per_request, concurrency, tokens)


def max_len_that_fits(layout: KvLayout, available_bytes: int, batched_tokens: int, upper: int) -> int:
    """Longest max_model_len for which one request fits (vLLM's estimate_max_model_len, by bisection)."""
    if layout.bytes_per_block == 0:
        return upper
    blocks = max(0, available_bytes) // layout.bytes_per_block
    lo, hi, best = 1, upper, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if blocks_per_request(layout, mid, batched_tokens) <= blocks:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best
