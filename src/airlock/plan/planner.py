"""``plan()``: from model facts and target hardware to sizes, checks, engine arguments and alternatives.

Example::

    facts = read_facts(Path("models/Llama-3.1-8B-Instruct"))
    p = plan(facts, PlanOptions(gpu="rtx-3090", max_model_len=20000, gpu_memory_utilization=0.9,
                                vllm_version="0.6.4"))
    p.capacity.tokens, p.fits, p.engine_args
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from airlock.errors import ConfigError
from airlock.plan import compat
from airlock.plan.facts import DTYPE_NAMES, DTYPE_SIZE, ModelFacts
from airlock.plan.hardware import GIB, Hardware, cpu_hardware, resolve_hardware
from airlock.plan.kv import Capacity, KvLayout, capacity, kv_layout, max_len_that_fits
from airlock.plan.memory import Budget, cpu_budget, gpu_budget
from airlock.plan.parallel import ParallelCheck, candidate_sizes, check_pp, check_tp


@dataclass(frozen=True)
class PlanOptions:
    gpu: str | None = None  # catalog name, optionally ":count"
    gpus: int | None = None
    gpu_memory: str | int | None = None  # "80GiB" or bytes
    driver: str | None = None
    cpu: bool = False  # plan for vLLM's CPU build
    cpu_kv_space_gib: int | None = None  # VLLM_CPU_KVCACHE_SPACE
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    vllm_version: str | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    block_size: int | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class Plan:
    facts: ModelFacts
    hardware: Hardware
    vllm_version: str
    tp: int
    pp: int
    dtype: str
    kv_dtype: str
    max_model_len: int
    utilization: float
    layout: KvLayout
    budget: Budget
    capacity: Capacity
    tp_checks: tuple[ParallelCheck, ...]
    pp_checks: tuple[ParallelCheck, ...]
    support: compat.Support
    quant: compat.QuantCheck | None
    driver: compat.DriverCheck | None
    fits: bool
    informational: bool  # CPU without a fixed KV space: vLLM sizes it from free RAM at start
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    suggestions: tuple[str, ...]
    engine_args: tuple[str, ...]
    settings: dict[str, object] = field(default_factory=dict)


def _resolve_dtype(facts: ModelFacts, requested: str | None, hw: Hardware) -> str:
    if requested and requested != "auto":
        return DTYPE_NAMES.get(requested, requested)
    dtype = facts.dtype
    bf16_ok = hw.is_cpu or hw.compute_capability is None or hw.compute_capability >= (8, 0)
    if dtype == "float32":
        return "bfloat16" if bf16_ok else "float16"  # vLLM downcasts float32 checkpoints
    if dtype == "bfloat16" and not bf16_ok:
        return "float16"
    return dtype


def _cast(facts: ModelFacts, dtype: str) -> ModelFacts:
    """The model as vLLM holds it in ``dtype``: an unquantized safetensors checkpoint's weights are cast
    (a float32 checkpoint takes half the memory in bfloat16); quantized weights keep their size."""
    if dtype == facts.dtype or facts.format != "safetensors":
        return facts
    if facts.quant is not None:
        return replace(facts, dtype=dtype)
    return replace(_scale_weights(facts, DTYPE_SIZE.get(dtype, 2) / facts.dtype_bytes), dtype=dtype)


def _scale_weights(facts: ModelFacts, ratio: float) -> ModelFacts:
    """``facts`` with every weight size (all, embedding, lm_head) times ``ratio``."""
    return replace(
        facts,
        weight_bytes=int(facts.weight_bytes * ratio),
        embedding_bytes=int(facts.embedding_bytes * ratio),
        lm_head_bytes=int(facts.lm_head_bytes * ratio),
    )


def _check_flags(options: PlanOptions, facts: ModelFacts) -> None:
    util = options.gpu_memory_utilization
    if util is not None and not 0 < util <= 1:
        raise ConfigError(f"--gpu-memory-utilization {util}: must be in (0, 1]")
    if options.cpu and (options.gpu or options.gpu_memory):
        raise ConfigError("--cpu plans for vLLM's CPU build; it takes no --gpu or --gpu-memory")
    if options.max_model_len is not None and options.max_model_len < 16:
        raise ConfigError(f"--max-model-len {options.max_model_len}: must be at least 16")
    q = options.quantization
    if (
        q
        and facts.quant
        and q.replace("-", "_") not in (facts.quant.method.replace("-", "_"), "marlin")
        and not q.endswith("marlin")
    ):
        raise ConfigError(
            f"--quantization {q} contradicts the checkpoint, which is {facts.quant.method}-quantized",
            hint="leave --quantization out: vLLM reads it from config.json",
        )


def default_block_size(facts: ModelFacts, hw: Hardware) -> int:
    """vLLM's default: 16 on GPUs (64 for MLA backends), 128 on the CPU (16 for its MLA kernel)."""
    if hw.is_cpu:
        return 16 if facts.mla is not None else 128
    return 64 if facts.mla is not None else 16


def plan(facts: ModelFacts, options: PlanOptions) -> Plan:
    _check_flags(options, facts)
    version = options.vllm_version or compat.latest_release()
    compat.version_key(version)
    if options.cpu:
        hw = cpu_hardware((options.cpu_kv_space_gib or 0) * GIB)
    else:
        hw = resolve_hardware(gpu=options.gpu, gpus=options.gpus, gpu_memory=options.gpu_memory)
    util = options.gpu_memory_utilization or compat.default_utilization(version)
    dtype = _resolve_dtype(facts, options.dtype, hw)
    dtype_bytes = DTYPE_SIZE.get(dtype, 2)
    facts_eff = _cast(facts, dtype)
    kv_dtype = options.kv_cache_dtype or "auto"
    block = options.block_size or default_block_size(facts, hw)

    tp_checks = tuple(check_tp(facts, n, gpus=hw.count) for n in candidate_sizes(max(hw.count, 8)))
    problems: list[str] = []
    notes: list[str] = list(facts.notes)

    ev = _Evaluator(
        hw, version, util, kv_dtype, block, dtype_bytes, options.max_num_batched_tokens, options.max_num_seqs
    )

    def evaluate(tp: int, pp: int, max_len: int) -> tuple[KvLayout, Budget, Capacity]:
        return ev(facts_eff, tp, pp, max_len)

    max_len = options.max_model_len or facts.max_model_len
    tp, pp = _choose_parallel(facts, options, hw, tp_checks, lambda t, p: evaluate(t, p, max_len))
    tp_check = next((c for c in tp_checks if c.size == tp), None) or check_tp(facts, tp, gpus=hw.count, pp=pp)
    if not tp_check.ok:
        problems += [f"tensor parallel {tp}: {r}" for r in tp_check.reasons]
    notes += list(tp_check.notes)
    pp_checks = tuple(
        check_pp(facts, n, gpus=hw.count, tp=tp) for n in candidate_sizes(max(1, hw.count // tp))
    )
    pp_check = check_pp(facts, pp, gpus=hw.count, tp=tp)
    if not pp_check.ok:
        problems += [f"pipeline parallel {pp}: {r}" for r in pp_check.reasons]
    layout, budget, cap = evaluate(tp, pp, max_len)
    informational = hw.is_cpu and not hw.memory_bytes
    suggestions: list[str] = []
    if (
        options.max_model_len is None
        and not informational
        and budget.kv_bytes > 0
        and cap.max_concurrency < 1
    ):
        fitted = max_len_that_fits(layout, budget.kv_bytes, budget.batched_tokens, max_len)
        fitted = fitted // 256 * 256 if fitted > 256 else fitted
        if fitted >= 16:
            notes.append(
                f"max_model_len lowered from the config's {max_len:,} to {fitted:,}, the longest that fits"
            )
            max_len = fitted
            layout, budget, cap = evaluate(tp, pp, max_len)
    if max_len > facts.max_model_len:
        notes.append(
            f"max_model_len {max_len:,} is beyond the model's {facts.max_model_len:,}: vLLM refuses it "
            "unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1"
        )
    if not informational:
        if budget.kv_bytes <= 0:
            problems.append(
                f"no memory left for the KV cache: weights {budget.weights / GIB:.2f} GiB + activations "
                f"{budget.activation / GIB:.2f} GiB + other {(budget.non_torch + budget.cuda_graphs) / GIB:.2f} GiB "
                f"exceed {util:.2f} x {budget.total / GIB:.2f} GiB per GPU"
            )
        elif cap.max_concurrency < 1:
            problems.append(
                f"one request of {max_len:,} tokens needs {cap.blocks_per_request:,} KV blocks; "
                f"{cap.num_blocks:,} fit ({budget.kv_bytes / GIB:.2f} GiB)"
            )
    # Problems of size and parallelism so far; more GPUs, quantization or a shorter length can mend
    # them, whereas a driver or architecture problem needs another vLLM release, not more memory.
    fit_problems = bool(problems)
    support = compat.arch_support(facts.architecture, version)
    if not support.ok and facts.format == "safetensors":
        problems.append(support.message)
    quant_method = options.quantization or (facts.quant.method if facts.quant else None)
    quant = (
        compat.quant_check(quant_method, hw.compute_capability, version)
        if quant_method and not hw.is_cpu
        else None
    )
    if quant is not None and not quant.ok:
        problems.append(quant.message)
    if kv_dtype.startswith("fp8") and hw.compute_capability is not None and hw.compute_capability < (8, 0):
        problems.append(f"an fp8 KV cache needs compute capability >= 8.0; this GPU has {hw.cc_text}")
    driver = compat.driver_runs(options.driver, version) if options.driver and not hw.is_cpu else None
    if driver is not None and driver.level == "no":
        problems.append(driver.message)
        newest = compat.newest_release_for_driver(options.driver or "")
        if newest:
            suggestions.append(
                f"vLLM {newest} (CUDA {compat.images()['releases'][newest]['cuda']}) runs natively on driver {options.driver}"
            )
    elif driver is not None and driver.level == "minor-compat":
        notes.append(driver.message)
    if fit_problems and not informational:
        suggestions += _alternatives(facts_eff, ev, tp_checks, max_len, layout, budget)
    if informational:
        notes.append(
            "CPU without VLLM_CPU_KVCACHE_SPACE: vLLM sizes the KV cache from free memory at start; "
            "the numbers below are per-token sizes only"
        )
    # Only what differs from vLLM's defaults, so these are exactly the flags serve and deploy pass.
    settings: dict[str, object] = {"max_model_len": max_len}
    if tp > 1:
        settings["tensor_parallel_size"] = tp
    if pp > 1:
        settings["pipeline_parallel_size"] = pp
    if not hw.is_cpu:
        settings["gpu_memory_utilization"] = util
    if kv_dtype != "auto":
        settings["kv_cache_dtype"] = kv_dtype
    if options.quantization:
        settings["quantization"] = options.quantization
    if options.max_num_seqs:
        settings["max_num_seqs"] = options.max_num_seqs
    args = _engine_args(settings)
    return Plan(
        facts=facts, hardware=hw, vllm_version=version, tp=tp, pp=pp, dtype=dtype, kv_dtype=kv_dtype,
        max_model_len=max_len, utilization=util, layout=layout, budget=budget, capacity=cap,
        tp_checks=tp_checks, pp_checks=pp_checks, support=support, quant=quant, driver=driver,
        fits=not problems and not informational, informational=informational, problems=tuple(problems),
        notes=tuple(notes), suggestions=tuple(dict.fromkeys(suggestions)), engine_args=args, settings=settings,
    )  # fmt: skip


def _engine_args(settings: dict[str, object]) -> tuple[str, ...]:
    args: list[str] = []
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return tuple(args)


def _choose_parallel(
    facts: ModelFacts,
    options: PlanOptions,
    hw: Hardware,
    tp_checks: tuple[ParallelCheck, ...],
    evaluate: Callable[[int, int], tuple[KvLayout, Budget, Capacity]],
) -> tuple[int, int]:
    """The given sizes, else the smallest valid tp (then pp) on the GPUs at hand that holds one request."""
    if options.tensor_parallel_size or options.pipeline_parallel_size:
        return options.tensor_parallel_size or 1, options.pipeline_parallel_size or 1
    if hw.is_cpu:
        return 1, 1
    valid = [c.size for c in tp_checks if c.ok and c.size <= hw.count]
    for tp in valid:
        _, budget, cap = evaluate(tp, 1)
        if budget.kv_bytes > 0 and cap.max_concurrency >= 1:
            return tp, 1
    for tp in valid:
        for pp in range(2, hw.count // tp + 1):
            if check_pp(facts, pp, gpus=hw.count, tp=tp).ok:
                _, budget, cap = evaluate(tp, pp)
                if budget.kv_bytes > 0 and cap.max_concurrency >= 1:
                    return tp, pp
    return (max(valid) if valid else 1), 1


def _alternatives(
    facts: ModelFacts,
    ev: _Evaluator,
    tp_checks: tuple[ParallelCheck, ...],
    max_len: int,
    layout: KvLayout,
    budget: Budget,
) -> list[str]:
    """What would fit: more GPUs, a quantized variant, an fp8 KV cache, a shorter max length."""
    out: list[str] = []
    hw = ev.hw
    if hw.key:
        for tp in (c.size for c in check_all(facts, 64)):
            if tp <= hw.count:
                continue
            _, b, cap = replace(ev, hw=replace(hw, count=tp))(facts, tp, 1, max_len)
            if b.kv_bytes > 0 and cap.max_concurrency >= 1:
                out.append(
                    f"{tp} x {hw.key} with --tensor-parallel-size {tp} ({cap.max_concurrency:.1f} requests of {max_len:,} tokens)"
                )
                break
    if facts.quant is None:
        for label, ratio in (
            ("an FP8 variant (about half the weight bytes)", 0.5),
            ("a 4-bit AWQ/GPTQ variant (about a quarter)", 0.27),
        ):
            _, b, cap = ev(
                _scale_weights(facts, ratio),
                1 if hw.count == 1 else _largest_valid(tp_checks, hw.count),
                1,
                max_len,
            )
            if b.kv_bytes > 0 and cap.max_concurrency >= 1:
                out.append(
                    f"{label} on the same GPUs ({cap.max_concurrency:.1f} requests of {max_len:,} tokens)"
                )
                break
    if ev.kv_dtype == "auto" and budget.kv_bytes > 0 and facts.dtype_bytes > 1:
        _, b, cap = replace(ev, kv_dtype="fp8")(facts, _largest_valid(tp_checks, hw.count), 1, max_len)
        if cap.max_concurrency >= 1:
            out.append(f"--kv-cache-dtype fp8 ({cap.max_concurrency:.1f} requests of {max_len:,} tokens)")
    if budget.kv_bytes > 0:
        fitted = max_len_that_fits(layout, budget.kv_bytes, budget.batched_tokens, max_len)
        if 16 <= fitted < max_len:
            out.append(f"--max-model-len {fitted:,} (the longest one request can hold here)")
    return out


def _largest_valid(tp_checks: tuple[ParallelCheck, ...], count: int) -> int:
    valid = [c.size for c in tp_checks if c.ok and c.size <= count]
    return max(valid) if valid else 1


def check_all(facts: ModelFacts, limit: int) -> list[ParallelCheck]:
    return [c for c in (check_tp(facts, n) for n in candidate_sizes(limit)) if c.ok]


@dataclass(frozen=True)
class _Evaluator:
    """KV layout, memory and capacity of one setting at a given tp, pp and length: the plan and its
    "what would fit" alternatives measure the same way (varying the GPUs, the weights or the KV dtype)."""

    hw: Hardware
    version: str
    util: float
    kv_dtype: str
    block: int
    dtype_bytes: int
    batched_tokens: int | None
    max_num_seqs: int | None

    def __call__(
        self, facts: ModelFacts, tp: int, pp: int, max_len: int
    ) -> tuple[KvLayout, Budget, Capacity]:
        layout = kv_layout(
            facts,
            tp=tp,
            pp=pp,
            kv_dtype=self.kv_dtype,
            block_size=self.block,
            model_dtype_bytes=self.dtype_bytes,
        )
        if self.hw.is_cpu:
            budget = cpu_budget(facts, self.hw.memory_bytes or None, tp=tp, pp=pp)
        else:
            budget = gpu_budget(
                facts, self.hw, tp=tp, pp=pp, util=self.util, version=self.version, max_model_len=max_len,
                batched_tokens=self.batched_tokens, max_num_seqs=self.max_num_seqs,
            )  # fmt: skip
        cap = capacity(
            layout, budget.kv_bytes, max_model_len=max_len, batched_tokens=budget.batched_tokens,
            concurrency_log=compat.version_key(self.version) >= (0, 22, 0),
        )  # fmt: skip
        return layout, budget, cap
