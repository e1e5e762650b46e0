"""Which tensor- and pipeline-parallel sizes a model can be split into, and why the others cannot.

vLLM shards attention by heads, MLPs by the intermediate dimension and experts' MLPs by
``moe_intermediate_size``; quantized weights must split on whole quantization groups or FP8 blocks
(Qwen3-30B-A3B-FP8: moe_intermediate_size 768 / tp 4 = 192, not a multiple of the 128 block, so
TP=4 fails at load). KV heads fewer than tp are replicated, which works when tp is a multiple of them.

Example::

    check_tp(facts, 4, gpus=4).ok       # False for Qwen3-30B-A3B-FP8
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airlock.plan.facts import ModelFacts


@dataclass(frozen=True)
class ParallelCheck:
    size: int
    ok: bool
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())


def stage_layers(kinds: tuple[str, ...], pp: int, stage: int) -> tuple[str, ...]:
    """The layers of one pipeline stage, split like vLLM's get_pp_indices (remainder to the early stages)."""
    n = len(kinds)
    base, extra = divmod(n, pp)
    sizes = [base] * pp
    for i in range(extra):  # vLLM gives the remainder to the stages before the last
        sizes[-(i + 2) if pp > 1 else 0] += 1
    start = sum(sizes[:stage])
    return kinds[start : start + sizes[stage]]


def check_tp(facts: ModelFacts, tp: int, *, gpus: int | None = None, pp: int = 1) -> ParallelCheck:
    reasons: list[str] = []
    notes: list[str] = []
    if gpus is not None and tp * pp > gpus:
        reasons.append(f"needs {tp * pp} GPUs (tp {tp} x pp {pp}); {gpus} given")
    if facts.num_heads % tp:
        reasons.append(f"{facts.num_heads} attention heads do not split into {tp}")
    kv = facts.num_kv_heads
    if facts.mla is None:
        if kv >= tp and kv % tp:
            reasons.append(f"{kv} kv heads do not split into {tp}")
        elif kv < tp and tp % kv:
            reasons.append(f"{kv} kv heads cannot be replicated evenly over {tp} GPUs")
        elif kv < tp:
            notes.append(f"each of the {kv} kv heads is replicated on {tp // kv} GPUs")
    _divides(reasons, "intermediate_size", facts.intermediate_size, tp, facts, dense=True)
    if facts.num_experts:
        _divides(reasons, "moe_intermediate_size", facts.moe_intermediate_size, tp, facts, dense=False)
    padded = -(-facts.vocab_size // (64 * tp)) * 64 * tp
    if padded != facts.vocab_size and not reasons:
        notes.append(f"vocabulary {facts.vocab_size:,} is padded to {padded:,} to split over {tp}")
    return ParallelCheck(tp, not reasons, tuple(reasons), tuple(notes))


def _divides(reasons: list[str], name: str, size: int, tp: int, facts: ModelFacts, *, dense: bool) -> None:
    if size <= 0:
        return
    if (
        dense
        and facts.num_experts
        and facts.intermediate_size == facts.moe_intermediate_size
        and name == "intermediate_size"
    ):
        return  # no separate dense MLP
    if size % tp:
        reasons.append(f"{name} {size} does not split into {tp}")
        return
    shard = size // tp
    q = facts.quant
    if q is None:
        return
    if q.weight_block is not None:
        block = q.weight_block[1]
        if shard % block:
            reasons.append(
                f"{name} {size} / {tp} = {shard} is not a multiple of the {block} FP8 weight block"
            )
    elif q.group_size and shard % q.group_size:
        reasons.append(
            f"{name} {size} / {tp} = {shard} is not a multiple of the quantization group {q.group_size}"
        )


def check_pp(facts: ModelFacts, pp: int, *, gpus: int | None = None, tp: int = 1) -> ParallelCheck:
    reasons = []
    if pp > facts.num_layers:
        reasons.append(f"{facts.num_layers} layers cannot fill {pp} pipeline stages")
    if gpus is not None and tp * pp > gpus:
        reasons.append(f"needs {tp * pp} GPUs (tp {tp} x pp {pp}); {gpus} given")
    return ParallelCheck(pp, not reasons, tuple(reasons))


def candidate_sizes(limit: int) -> list[int]:
    """1, 2, 4, 8, ... and the limit itself (a 6- or 3-GPU host is not unusual)."""
    sizes = []
    n = 1
    while n <= limit:
        sizes.append(n)
        n *= 2
    if limit not in sizes:
        sizes.append(limit)
    return sizes
