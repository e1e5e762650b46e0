"""The start check serve and deploy run: plan each vLLM model, fill unset engine arguments, refuse what cannot start.

Only models on GPUs named in the spec's ``hardware`` section are checked strictly. Without one, the
engine runs on vLLM's CPU build, where the plan is informational: nothing is filled or refused.

Example::

    spec, checks = apply_plan(spec)              # raises CannotStartError for a model that cannot start
    spec, checks = apply_plan(spec, force=True)  # plans, fills, and only reports
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import AirlockError, CannotStartError
from airlock.plan.facts import ModelFacts, read_facts
from airlock.plan.planner import Plan, PlanOptions, plan
from airlock.spec import ModelSpec, Spec, VllmEngineSpec
from airlock.store.resolve import resolve_model_dir

_ARG_FLAGS = {
    "--kv-cache-dtype": "kv_cache_dtype",
    "--quantization": "quantization",
    "-q": "quantization",
    "--max-num-batched-tokens": "max_num_batched_tokens",
    "--block-size": "block_size",
}


@dataclass(frozen=True)
class StartCheck:
    model: str
    plan: Plan | None
    filled: dict[str, object]
    blocking: bool  # True: the plan is strict for this model (GPU hardware in the spec)
    message: str


def args_options(args: list[str]) -> dict[str, object]:
    """The plan-relevant flags already in ``engine.args`` (``--kv-cache-dtype fp8`` or ``--kv-cache-dtype=fp8``)."""
    found: dict[str, object] = {}
    i = 0
    while i < len(args):
        flag, _, value = args[i].partition("=")
        if flag in _ARG_FLAGS:
            if not value and i + 1 < len(args):
                value = args[i + 1]
                i += 1
            key = _ARG_FLAGS[flag]
            found[key] = (
                int(value) if key in ("max_num_batched_tokens", "block_size") and value.isdigit() else value
            )
        i += 1
    return found


def options_for(spec: Spec, engine: VllmEngineSpec, environ: Mapping[str, str]) -> PlanOptions:
    extra = args_options(engine.args)
    hw = spec.hardware
    common: dict[str, object] = {
        "max_model_len": engine.max_model_len,
        "gpu_memory_utilization": engine.gpu_memory_utilization,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "pipeline_parallel_size": engine.pipeline_parallel_size,
        "max_num_seqs": engine.max_num_seqs,
        "dtype": engine.dtype,
        "vllm_version": engine.version,
        "kv_cache_dtype": str(extra.get("kv_cache_dtype", "auto")),
        "quantization": extra.get("quantization"),
        "max_num_batched_tokens": extra.get("max_num_batched_tokens"),
        "block_size": extra.get("block_size"),
    }
    if hw is None:
        space = engine.env.get("VLLM_CPU_KVCACHE_SPACE") or environ.get("VLLM_CPU_KVCACHE_SPACE")
        kv_gib = int(space) if space and space.isdigit() and int(space) > 0 else None
        return PlanOptions(cpu=True, cpu_kv_space_gib=kv_gib, **common)  # type: ignore[arg-type]
    return PlanOptions(
        gpu=hw.gpu, gpus=hw.count, gpu_memory=int(hw.gpu_memory) if hw.gpu_memory else None,
        driver=hw.driver, **common,  # type: ignore[arg-type]
    )  # fmt: skip


def model_folder(model: ModelSpec, store: Path | None) -> Path | None:
    """The folder the engine will serve (the store's own rule, ``resolve_model_dir``); None for an 'hf'
    model when there is no store to look in."""
    if model.hf is not None and store is None:
        return None
    return resolve_model_dir(model, store)


def apply_plan(
    spec: Spec,
    *,
    store: Path | None = None,
    force: bool = False,
    environ: Mapping[str, str] | None = None,
    reader: Callable[[Path], ModelFacts] = read_facts,
) -> tuple[Spec, list[StartCheck]]:
    """Plan every vLLM model; return the spec with plan-filled engine fields and one check per model.

    ``store``: where the engines will find 'hf' models and local ones absent from their path (serve
    passes the spec's store or the default one)."""
    env = os.environ if environ is None else environ
    strict = spec.hardware is not None
    checks: list[StartCheck] = []
    models: list[ModelSpec] = []
    for model in spec.models:
        engine = model.engine
        if not isinstance(engine, VllmEngineSpec):
            models.append(model)
            continue
        try:
            folder = model_folder(model, store)
            if folder is None:
                models.append(model)
                continue
            result = plan(reader(folder), options_for(spec, engine, env))
        except AirlockError as exc:
            if strict and not force:
                raise CannotStartError(
                    f"model {model.name!r}: cannot plan it: {exc}", hint="--force starts it anyway"
                ) from exc
            checks.append(StartCheck(model.name, None, {}, strict, f"not planned: {exc}"))
            models.append(model)
            continue
        if not strict:
            checks.append(StartCheck(model.name, result, {}, False, _summary(result)))
            models.append(model)
            continue
        if result.problems and not force:
            raise CannotStartError(
                f"model {model.name!r} cannot start on {result.hardware.count} x {result.hardware.name}: "
                + "; ".join(result.problems),
                reasons=result.problems,
                suggestions=result.suggestions,
                hint=(
                    "would fit: " + "; ".join(result.suggestions)
                    if result.suggestions
                    else "--force starts it anyway"
                ),
            )
        filled = {
            k: v for k, v in result.settings.items() if hasattr(engine, k) and getattr(engine, k) is None
        }
        new_engine = engine.model_copy(update=filled)
        models.append(model.model_copy(update={"engine": new_engine}))
        checks.append(StartCheck(model.name, result, filled, True, _summary(result)))
    return spec.model_copy(update={"models": models}), checks


def _summary(p: Plan) -> str:
    if p.informational:
        return f"CPU: KV {p.layout.bytes_per_token:,} bytes per token (size set by vLLM at start); {_args(p)}"
    state = "fits" if p.fits else "DOES NOT FIT: " + "; ".join(p.problems)
    return (
        f"{state}; KV {p.capacity.tokens:,} tokens, {p.capacity.max_concurrency:.1f} x {p.max_model_len:,}-token "
        f"requests; {_args(p)}"
    )


def _args(p: Plan) -> str:
    return "args: " + (shlex.join(p.engine_args) or "(none)")
