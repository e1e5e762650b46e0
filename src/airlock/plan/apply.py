"""The start check serve runs: plan each vLLM model, fill unset engine arguments, refuse what cannot start.

Only models on GPUs named in the spec's ``hardware`` section are checked strictly. Without one, the
engine runs on vLLM's CPU build, where the plan is informational: nothing is refused, and only the
dtype is filled when the spec sets none (the one this host's CPU runs fast, ``plan.cpu``).

Example::

    spec, checks = apply_plan(spec)              # raises CannotStartError for a model that cannot start
    spec, checks = apply_plan(spec, force=True)  # plans, fills, and only reports
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from airlock.errors import AirlockError, CannotStartError
from airlock.plan.argv import given_flags
from airlock.plan.cpu import cpu_dtype, host_cpu_flags
from airlock.plan.facts import ModelFacts, read_facts
from airlock.plan.planner import Plan, PlanOptions, allows_long_max_model_len, plan
from airlock.spec import ModelSpec, Spec, VllmEngineSpec
from airlock.store.resolve import resolve_model_dir

_ARG_FLAGS = {
    "--kv-cache-dtype": "kv_cache_dtype",
    "--quantization": "quantization",
    "-q": "quantization",
    "--max-num-batched-tokens": "max_num_batched_tokens",
    "--block-size": "block_size",
}

_ALLOW_LONG = "VLLM_ALLOW_LONG_MAX_MODEL_LEN"  # the engine's environment: the spec's env over serve's own


@dataclass(frozen=True)
class StartCheck:
    model: str
    plan: Plan | None
    filled: Mapping[str, object]  # the engine fields the plan set (an update for the spec's pydantic model)
    blocking: bool  # True: the plan is strict for this model (GPU hardware in the spec)
    message: str


class AppliedPlan(NamedTuple):
    """The spec with plan-filled engine fields, and one check per planned model (unpacks as a pair)."""

    spec: Spec
    checks: tuple[StartCheck, ...]


@dataclass(frozen=True)
class ArgFlags:
    """The plan-relevant flags an engine's ``args`` already give (None: not given)."""

    kv_cache_dtype: str | None = None
    quantization: str | None = None
    max_num_batched_tokens: int | None = None
    block_size: int | None = None


def args_options(args: list[str]) -> ArgFlags:
    """The plan-relevant flags already in ``engine.args`` (``--kv-cache-dtype fp8`` or ``--kv-cache-dtype=fp8``)."""
    found = given_flags(args, _ARG_FLAGS)
    return ArgFlags(
        kv_cache_dtype=found.get("kv_cache_dtype"),
        quantization=found.get("quantization"),
        max_num_batched_tokens=_count(found.get("max_num_batched_tokens")),
        block_size=_count(found.get("block_size")),
    )


def _count(value: str | None) -> int | None:
    """A flag's value as a whole number; None when absent or not digits (vLLM itself rejects those)."""
    return int(value) if value is not None and value.isdigit() else None


def options_for(
    spec: Spec, engine: VllmEngineSpec, environ: Mapping[str, str], *, cpu_flags: frozenset[str] | None = None
) -> PlanOptions:
    """The plan's options for one vLLM engine: its fields and flags, on the spec's GPUs (else vLLM's CPU build)."""
    flags = args_options(engine.args)
    options = PlanOptions(
        max_model_len=engine.max_model_len,
        gpu_memory_utilization=engine.gpu_memory_utilization,
        tensor_parallel_size=engine.tensor_parallel_size,
        pipeline_parallel_size=engine.pipeline_parallel_size,
        max_num_seqs=engine.max_num_seqs,
        dtype=engine.dtype,
        vllm_version=engine.version,
        kv_cache_dtype="auto" if flags.kv_cache_dtype is None else flags.kv_cache_dtype,
        quantization=flags.quantization,
        max_num_batched_tokens=flags.max_num_batched_tokens,
        block_size=flags.block_size,
        allow_long_max_model_len=allows_long_max_model_len(
            engine.env.get(_ALLOW_LONG, environ.get(_ALLOW_LONG))
        ),
    )
    hw = spec.hardware
    if hw is None:
        space = engine.env.get("VLLM_CPU_KVCACHE_SPACE") or environ.get("VLLM_CPU_KVCACHE_SPACE")
        kv_gib = int(space) if space and space.isdigit() and int(space) > 0 else None
        return replace(options, cpu=True, cpu_kv_space_gib=kv_gib, cpu_flags=cpu_flags)
    gpu_memory = int(hw.gpu_memory) if hw.gpu_memory else None
    return replace(options, gpu=hw.gpu, gpus=hw.count, gpu_memory=gpu_memory, driver=hw.driver)


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
    cpu_flags: frozenset[str] | None = None,
) -> AppliedPlan:
    """Plan every vLLM model; return the spec with plan-filled engine fields and one check per model.

    ``store``: where the engines will find 'hf' models and local ones absent from their path (serve
    passes the spec's store or the default one). ``cpu_flags``: the CPU's /proc/cpuinfo flags
    (default: this host's), which choose the dtype on vLLM's CPU build."""
    flags = host_cpu_flags() if cpu_flags is None else cpu_flags
    check = _ModelCheck(spec, store, force, os.environ if environ is None else environ, reader, flags)
    checked = [check(model) for model in spec.models]
    models = [c.model for c in checked]
    checks = tuple(c.check for c in checked if c.check is not None)
    return AppliedPlan(spec.model_copy(update={"models": models}), checks)


@dataclass(frozen=True)
class _Checked:
    """One model after the start check: filled where the plan is strict, and its check (None: not planned)."""

    model: ModelSpec
    check: StartCheck | None


@dataclass(frozen=True)
class _ModelCheck:
    """The start check of one model of ``spec``: plan it, then report, fill or refuse."""

    spec: Spec
    store: Path | None
    force: bool
    environ: Mapping[str, str]
    reader: Callable[[Path], ModelFacts]
    cpu_flags: frozenset[str]

    def __call__(self, model: ModelSpec) -> _Checked:
        engine = model.engine
        if not isinstance(engine, VllmEngineSpec):
            return _Checked(model, None)
        strict = self.spec.hardware is not None
        # vLLM's CPU build (no hardware section): the dtype this CPU runs fast, unless the spec sets one
        cpu_fill = {} if strict or engine.dtype else {"dtype": cpu_dtype(self.cpu_flags).dtype}
        if cpu_fill:
            model = model.model_copy(update={"engine": engine.model_copy(update=cpu_fill)})
        try:
            folder = model_folder(model, self.store)
            if folder is None:
                return _Checked(model, None)
            options = options_for(self.spec, engine, self.environ, cpu_flags=self.cpu_flags)
            result = plan(self.reader(folder), options)
        except AirlockError as exc:
            if strict and not self.force:
                raise CannotStartError(
                    f"model {model.name!r}: cannot plan it: {exc}", hint="--force starts it anyway"
                ) from exc
            return _Checked(model, StartCheck(model.name, None, cpu_fill, strict, f"not planned: {exc}"))
        if not strict:
            return _Checked(model, StartCheck(model.name, result, cpu_fill, False, _summary(result)))
        if result.problems and not self.force:
            raise _cannot_start(model.name, result)
        filled = {
            k: v
            for k, v in result.settings.given().items()
            if hasattr(engine, k) and getattr(engine, k) is None
        }
        new_model = model.model_copy(update={"engine": engine.model_copy(update=filled)})
        return _Checked(new_model, StartCheck(model.name, result, filled, True, _summary(result)))


def _cannot_start(name: str, result: Plan) -> CannotStartError:
    """The refusal for a strict plan with problems: the reasons, and what would fit if anything does."""
    return CannotStartError(
        f"model {name!r} cannot start on {result.hardware.count} x {result.hardware.name}: "
        + "; ".join(result.problems),
        reasons=result.problems,
        suggestions=result.suggestions,
        hint=(
            "would fit: " + "; ".join(result.suggestions)
            if result.suggestions
            else "--force starts it anyway"
        ),
    )


def _summary(p: Plan) -> str:
    """One line for serve's log: fits or not, KV capacity, and the engine arguments."""
    if p.informational:
        cannot = "CANNOT START: " + "; ".join(p.problems) + "; " if p.problems else ""
        return f"{cannot}CPU: KV {p.layout.bytes_per_token:,} bytes per token (size set by vLLM at start); {_args(p)}"
    state = "fits" if p.fits else "DOES NOT FIT: " + "; ".join(p.problems)
    return (
        f"{state}; KV {p.capacity.tokens:,} tokens, {p.capacity.max_concurrency:.1f} x {p.max_model_len:,}-token "
        f"requests; {_args(p)}"
    )


def _args(p: Plan) -> str:
    """The plan's engine arguments as a shell would quote them."""
    return "args: " + (shlex.join(p.engine_args) or "(none)")
