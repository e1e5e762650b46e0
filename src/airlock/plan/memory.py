"""Per-GPU memory: weights, the profiling run's activation peak, non-torch memory, CUDA graphs, KV budget.

vLLM's accounting (vllm/v1/worker/gpu_worker.py ``determine_available_memory``):

    kv_budget = total x gpu_memory_utilization - weights - activation_peak - non_torch [- cuda_graphs]

where ``total`` is what the driver reports, the activation peak is what torch allocated beyond the
weights during one dummy forward pass of ``max_num_batched_tokens`` tokens and one dummy sampler pass
of ``max_num_seqs`` rows of logits, non-torch memory is the CUDA context, cuBLAS and NCCL buffers, and
CUDA-graph memory is subtracted only from 0.21 on (``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS``, on by
default since then). The V0 engine (before 0.8) profiled one forward pass of
``max(max_model_len, 2048)`` tokens instead, without chunked prefill.

The peak is estimated, not measured; the constants below were fitted to published vLLM logs:

- V1 sampler pass, which depends on the top-k/top-p implementation the release profiles with
  (``sampler_path``): PyTorch's sort-based path costs 38.9 bytes per (sequence x vocabulary) element
  (H100, 1,024 sequences: Llama-3.1-8B 4.76 GiB, Llama-3.3-70B-FP8 at tp 2 4.84, Qwen3-0.6B 5.56,
  Qwen3-32B 5.64, gpt-oss-20b 7.38; llm-d-benchmark config_explorer/empirical-vllm-memory-results.md);
  FlashInfer's rejection sampler, which needs no sort, 17.0 (Mistral-Small-3.2-24B on vLLM 0.11.0,
  2.12 GiB, same file; counting its tensors gives at least 14: bf16 and fp32 logits, masked logits,
  probabilities).
- Forward pass: tokens x dtype bytes x (3 x intermediate / tp + 3 x hidden) (vLLM 0.6 on an RTX 3090,
  Llama-3.1-8B: 2.07 GiB at 20,000 tokens and 2.99 GiB at 29,000; vllm-project/vllm issue 10517).
- Non-torch: 0.13-0.14 GiB at tp 1 and 0.55 at tp 2 (H100, 0.11); 0.35 GiB in V0 (RTX 3090).

Example::

    b = gpu_budget(facts, hw, tp=1, pp=1, util=0.9, version="0.11.0", max_model_len=16000)
    b.kv_bytes / 2**30
"""

from __future__ import annotations

from dataclasses import dataclass

from airlock.plan.compat import version_key
from airlock.plan.facts import ModelFacts
from airlock.plan.hardware import GIB, Hardware
from airlock.plan.parallel import stage_layers

SAMPLER_BYTES_PER_LOGIT = {"native": 38.9, "flashinfer": 17.0}
NON_TORCH_TP1 = int(0.14 * GIB)
NON_TORCH_MULTI = int(0.55 * GIB)
NON_TORCH_V0 = int(0.35 * GIB)
CUDA_GRAPHS = int(0.35 * GIB)  # logged pools: 0.09-1.03 GiB (H100 and RTX 5090 logs)


@dataclass(frozen=True)
class Budget:
    total: int  # per GPU, driver-reported
    requested: int  # total x utilization
    weights: int
    activation: int
    non_torch: int
    cuda_graphs: int
    kv_bytes: int  # may be negative: that much is missing
    batched_tokens: int
    max_num_seqs: int
    engine: str  # "v1" | "v0"
    sampler: str = "native"  # the top-k/top-p path the profiling run measures: "native" | "flashinfer"


def uses_v1(version: str) -> bool:
    return version_key(version) >= (0, 8, 0)


def sampler_path(version: str, hw: Hardware) -> str:
    """Which top-k/top-p sampler vLLM's profiling run uses on this hardware: "native" or "flashinfer".

    From 0.8 to 0.11.0 the V1 sampler used FlashInfer whenever it was importable, and the
    vllm/vllm-openai image ships it (pip's wheel did not require it before 0.11.1). 0.11.1 made it
    opt-in (VLLM_USE_FLASHINFER_SAMPLER=1); 0.21 made it the default again but also warms the
    PyTorch path during profiling, so that path's peak counts (vllm/v1/sample/ops/topk_topp_sampler.py
    and gpu_model_runner.py ``_dummy_sampler_run`` of each release).
    """
    if hw.is_cpu or not uses_v1(version):
        return "native"
    return "flashinfer" if version_key(version) <= (0, 11, 0) else "native"


@dataclass(frozen=True)
class Batching:
    """How much one scheduler step takes: tokens across the batch, and sequences."""

    max_num_batched_tokens: int
    max_num_seqs: int


def default_batching(version: str, hw: Hardware) -> Batching:
    """The batching vLLM picks for its OpenAI server on this GPU."""
    if hw.is_cpu:
        return Batching(2048, 128)
    name = (hw.key or "").lower()
    if hw.memory_bytes >= 160 * GIB and version_key(version) >= (0, 22, 0):
        return Batching(16384, 1024)
    if hw.memory_bytes >= 70 * GIB and "a100" not in name and "a800" not in name:
        return Batching(8192, 1024)
    return Batching(2048, 256)


def weights_per_gpu(facts: ModelFacts, tp: int, pp: int) -> int:
    """The largest stage's share of the checkpoint on one GPU, with replicated pieces and the rope cache."""
    embed, head = facts.embedding_bytes, facts.lm_head_bytes
    body = max(0, facts.weight_bytes - embed - head)
    extra = 0
    if facts.mla is None and facts.num_kv_heads < tp:
        kv_proj = (
            facts.num_layers * 2 * facts.hidden_size * facts.num_kv_heads * facts.head_dim * facts.dtype_bytes
        )
        extra = int(kv_proj * (1 / facts.num_kv_heads - 1 / tp))
    if facts.mla is not None:  # q_a_proj and kv_a_proj_with_mqa are replicated, not sharded
        latent = facts.mla.kv_lora_rank + facts.mla.qk_rope_head_dim + 1536
        extra = int(facts.num_layers * facts.hidden_size * latent * min(facts.dtype_bytes, 2) * (1 - 1 / tp))
    worst = 0
    for stage in range(pp):
        share = len(stage_layers(facts.layer_kinds, pp, stage)) / facts.num_layers
        size = body * share / tp + extra * share
        if stage == 0:
            size += embed / tp
        if stage == pp - 1:
            size += (head or (embed if pp > 1 else 0)) / tp
        worst = max(worst, int(size))
    rope = facts.max_model_len * facts.rotary_dim * facts.dtype_bytes if facts.rotary_dim else 0
    return worst + rope


def activation_peak(
    facts: ModelFacts, tp: int, version: str, tokens: int, seqs: int, act_bytes: int, sampler: str
) -> int:
    inter = facts.intermediate_size
    if facts.num_experts and facts.experts_per_token:
        moe = facts.experts_per_token * (3 * facts.moe_intermediate_size + facts.hidden_size)
        inter = max(inter if inter != facts.moe_intermediate_size else 0, moe // 3)
    forward = tokens * act_bytes * (3 * inter // tp + 3 * facts.hidden_size)
    if not uses_v1(version):
        return int(forward)
    logits = seqs * facts.vocab_size * SAMPLER_BYTES_PER_LOGIT[sampler]
    return int(max(forward, logits))


def gpu_budget(
    facts: ModelFacts,
    hw: Hardware,
    *,
    tp: int,
    pp: int,
    util: float,
    version: str,
    max_model_len: int,
    batched_tokens: int | None = None,
    max_num_seqs: int | None = None,
) -> Budget:
    v1 = uses_v1(version)
    defaults = default_batching(version, hw)
    seqs = max_num_seqs or defaults.max_num_seqs
    if batched_tokens is None:
        if v1:
            batched_tokens = defaults.max_num_batched_tokens
        else:  # V0: whole prompts unless chunked prefill (on by default past 32K)
            batched_tokens = max(max_model_len, 2048) if max_model_len <= 32768 else 2048
    requested = int(hw.memory_bytes * util)
    weights = weights_per_gpu(facts, tp, pp)
    sampler = sampler_path(version, hw)
    act = activation_peak(facts, tp, version, batched_tokens, seqs, min(facts.dtype_bytes, 2), sampler)
    non_torch = NON_TORCH_V0 if not v1 else NON_TORCH_TP1 if tp * pp == 1 else NON_TORCH_MULTI
    graphs = CUDA_GRAPHS if version_key(version) >= (0, 21, 0) else 0
    kv = requested - weights - act - non_torch - graphs
    return Budget(
        total=hw.memory_bytes,
        requested=requested,
        weights=weights,
        activation=act,
        non_torch=non_torch,
        cuda_graphs=graphs,
        kv_bytes=kv,
        batched_tokens=batched_tokens,
        max_num_seqs=seqs,
        engine="v1" if v1 else "v0",
        sampler=sampler,
    )


def cpu_budget(facts: ModelFacts, kv_space: int | None, *, tp: int, pp: int) -> Budget:
    """vLLM's CPU build: the KV cache is exactly VLLM_CPU_KVCACHE_SPACE GiB when that is set."""
    weights = weights_per_gpu(facts, tp, pp)
    space = kv_space or 0
    return Budget(space, space, weights, 0, 0, 0, space, 2048, 128, "v1")
