"""``plan()``: from model facts and target hardware to sizes, checks, engine arguments and alternatives.

Example::

    facts = read_facts(Path("models/Llama-3.1-8B-Instruct"))
    p = plan(facts, PlanOptions(gpu="rtx-3090", max_model_len=20000, gpu_memory_utilization=0.9,
                                vllm_version="0.6.4"))
    p.capacity.tokens, p.fits, p.engine_args
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from airlock.errors import ConfigError
from airlock.plan import compat
from airlock.plan.cpu import CpuDtype, cpu_dtype, host_cpu_flags
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
    allow_long_max_model_len: bool = False  # VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 in the engine's environment
    cpu_flags: frozenset[str] | None = None  # the CPU's /proc/cpuinfo flags (None: this host's)


def allows_long_max_model_len(value: str | None) -> bool:
    """Whether a VLLM_ALLOW_LONG_MAX_MODEL_LEN value turns vLLM's length check off (as vLLM reads it: 1 or true)."""
    return value is not None and value.strip().lower() in ("1", "true")


@dataclass(frozen=True)
class EngineSettings:
    """The engine arguments a plan sets, only where they differ from vLLM's defaults (None: vLLM's own)."""

    max_model_len: int
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None
    kv_cache_dtype: str | None = None
    quantization: str | None = None
    max_num_seqs: int | None = None
    dtype: str | None = None  # on the CPU: the dtype this host computes fast (plan.cpu)

    def given(self) -> dict[str, object]:
        """The fields that are set, by name, in flag order (an update for the spec's engine section)."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    def args(self) -> tuple[str, ...]:
        """The same as vLLM command-line flags: ``--max-model-len 8192 ...``."""
        return tuple(
            a for key, value in self.given().items() for a in (f"--{key.replace('_', '-')}", str(value))
        )


@dataclass(frozen=True)
class Sizing:
    """One setting measured: its KV layout, memory budget per GPU and KV capacity."""

    layout: KvLayout
    budget: Budget
    capacity: Capacity

    @property
    def holds_one_request(self) -> bool:
        """Room for the KV cache, and for at least one request of the full length."""
        return self.budget.kv_bytes > 0 and self.capacity.max_concurrency >= 1


@dataclass(frozen=True)
class _Parallel:
    """Tensor and pipeline parallel sizes."""

    tp: int
    pp: int


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
    settings: EngineSettings


def _resolve_dtype(facts: ModelFacts, requested: str | None, hw: Hardware, cpu: CpuDtype) -> str:
    if requested and requested != "auto":
        return DTYPE_NAMES.get(requested, requested)
    if hw.is_cpu:
        return cpu.dtype
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
    if options.gpus is not None and not (options.gpu or options.gpu_memory):
        raise ConfigError(
            f"--gpus {options.gpus} counts GPUs, but no GPU is given: add --gpu (a catalog name) or --gpu-memory",
            hint=f"e.g. --gpu h100-80gb --gpus {options.gpus}, or --gpu-memory 80GiB --gpus {options.gpus}; "
            "--list-gpus shows the catalog",
        )
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


@dataclass(frozen=True)
class _Findings:
    """What a stage of the plan found: reasons it cannot start, notes, and what would fit instead."""

    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    suggestions: tuple[str, ...] = ()

    def __add__(self, other: _Findings) -> _Findings:
        return _Findings(
            self.problems + other.problems, self.notes + other.notes, self.suggestions + other.suggestions
        )


@dataclass(frozen=True)
class _Setting:
    """What the plan holds fixed: the release, the hardware, the dtypes, and how one tp/pp/length is measured."""

    version: str
    hw: Hardware
    util: float
    dtype: str
    kv_dtype: str
    facts: ModelFacts  # as vLLM holds it in ``dtype``
    measure: _Evaluator
    cpu: CpuDtype  # the dtype this host's CPU runs fast (used on the CPU when none is asked)


@dataclass(frozen=True)
class _Fit:
    """The parallel sizes and length chosen, what they measure, and what stands in the way."""

    tp: int
    pp: int
    max_len: int
    sizing: Sizing
    tp_checks: tuple[ParallelCheck, ...]
    pp_checks: tuple[ParallelCheck, ...]
    informational: bool  # CPU without a fixed KV space: vLLM sizes it from free RAM at start
    findings: _Findings


@dataclass(frozen=True)
class _Compatibility:
    """Whether this vLLM release runs the architecture, the quantization and the KV dtype on the driver at hand."""

    support: compat.Support
    quant: compat.QuantCheck | None
    driver: compat.DriverCheck | None
    findings: _Findings


def plan(facts: ModelFacts, options: PlanOptions) -> Plan:
    """Plan ``facts`` on the target ``options`` describes, in stages: the setting (release, hardware,
    dtypes), the fit (parallel sizes, memory, KV capacity), compatibility, then the engine arguments."""
    _check_flags(options, facts)
    setting = _setting(facts, options)
    fit = _fit(facts, options, setting)
    checks = _compatibility(facts, options, setting)
    found = fit.findings + checks.findings + _length_findings(facts, options, fit.max_len)
    # Problems of size and parallelism can be mended by more GPUs, quantization or a shorter length,
    # whereas a driver or architecture problem needs another vLLM release, not more memory.
    if fit.findings.problems and not fit.informational:
        found += _Findings(suggestions=tuple(_alternatives(setting.facts, setting.measure, fit)))
    found += _Findings(notes=_cpu_dtype_notes(options, setting))
    if fit.informational:
        found += _Findings(notes=(
            "CPU without VLLM_CPU_KVCACHE_SPACE: vLLM sizes the KV cache from free memory at start; "
            "the numbers below are per-token sizes only",
        ))  # fmt: skip
    settings = _engine_settings(options, setting, fit)
    return Plan(
        facts=facts, hardware=setting.hw, vllm_version=setting.version, tp=fit.tp, pp=fit.pp,
        dtype=setting.dtype, kv_dtype=setting.kv_dtype, max_model_len=fit.max_len, utilization=setting.util,
        layout=fit.sizing.layout, budget=fit.sizing.budget, capacity=fit.sizing.capacity,
        tp_checks=fit.tp_checks, pp_checks=fit.pp_checks, support=checks.support, quant=checks.quant,
        driver=checks.driver, fits=not found.problems and not fit.informational,
        informational=fit.informational, problems=found.problems, notes=facts.notes + found.notes,
        suggestions=tuple(dict.fromkeys(found.suggestions)), engine_args=settings.args(), settings=settings,
    )  # fmt: skip


def _setting(facts: ModelFacts, options: PlanOptions) -> _Setting:
    """The release (default: the newest tabled), the hardware, the dtypes and the measure built from them."""
    version = options.vllm_version or compat.latest_release()
    compat.version_key(version)
    if options.cpu:
        hw = cpu_hardware((options.cpu_kv_space_gib or 0) * GIB)
    else:
        hw = resolve_hardware(gpu=options.gpu, gpus=options.gpus, gpu_memory=options.gpu_memory)
    util = options.gpu_memory_utilization or compat.default_utilization(version)
    cpu = cpu_dtype(host_cpu_flags() if options.cpu_flags is None else options.cpu_flags)
    dtype = _resolve_dtype(facts, options.dtype, hw, cpu)
    kv_dtype = options.kv_cache_dtype or "auto"
    measure = _Evaluator(
        hw, version, util, kv_dtype, options.block_size or default_block_size(facts, hw),
        DTYPE_SIZE.get(dtype, 2), options.max_num_batched_tokens, options.max_num_seqs,
    )  # fmt: skip
    return _Setting(version, hw, util, dtype, kv_dtype, _cast(facts, dtype), measure, cpu)


def _fit(facts: ModelFacts, options: PlanOptions, s: _Setting) -> _Fit:
    """Choose and check tp and pp, measure memory and KV capacity, and lower a default length that cannot fit."""
    hw = s.hw
    tp_checks = tuple(check_tp(facts, n, gpus=hw.count) for n in candidate_sizes(max(hw.count, 8)))
    max_len = options.max_model_len or facts.max_model_len
    chosen = _choose_parallel(facts, options, hw, tp_checks, lambda t, p: s.measure(s.facts, t, p, max_len))
    tp, pp = chosen.tp, chosen.pp
    found = _parallel_findings(facts, hw, tp_checks, tp, pp)
    sizing = s.measure(s.facts, tp, pp, max_len)
    informational = hw.is_cpu and not hw.memory_bytes
    if options.max_model_len is None and not informational:
        fitted = _fitted_length(sizing, max_len)
        if fitted is not None:
            found += _Findings(notes=(
                f"max_model_len lowered from the config's {max_len:,} to {fitted:,}, the longest that fits",
            ))  # fmt: skip
            max_len = fitted
            sizing = s.measure(s.facts, tp, pp, max_len)
    if not informational:
        found += _memory_findings(sizing, s.util, max_len)
    pp_checks = tuple(
        check_pp(facts, n, gpus=hw.count, tp=tp) for n in candidate_sizes(max(1, hw.count // tp))
    )
    return _Fit(tp, pp, max_len, sizing, tp_checks, pp_checks, informational, found)


def _parallel_findings(
    facts: ModelFacts, hw: Hardware, tp_checks: tuple[ParallelCheck, ...], tp: int, pp: int
) -> _Findings:
    """Why the chosen tensor and pipeline sizes cannot split this model, and the tp check's notes."""
    tp_check = next((c for c in tp_checks if c.size == tp), None) or check_tp(facts, tp, gpus=hw.count, pp=pp)
    pp_check = check_pp(facts, pp, gpus=hw.count, tp=tp)
    problems = [f"tensor parallel {tp}: {r}" for r in tp_check.reasons] if not tp_check.ok else []
    problems += [f"pipeline parallel {pp}: {r}" for r in pp_check.reasons] if not pp_check.ok else []
    return _Findings(problems=tuple(problems), notes=tp_check.notes)


def _fitted_length(sizing: Sizing, max_len: int) -> int | None:
    """The longest length (a multiple of 256 past 256) one request can hold, when ``max_len`` cannot; else None."""
    budget = sizing.budget
    if budget.kv_bytes <= 0 or sizing.capacity.max_concurrency >= 1:
        return None
    fitted = max_len_that_fits(sizing.layout, budget.kv_bytes, budget.batched_tokens, max_len)
    fitted = fitted // 256 * 256 if fitted > 256 else fitted
    return fitted if fitted >= 16 else None


def _length_findings(facts: ModelFacts, options: PlanOptions, max_len: int) -> _Findings:
    """vLLM's own length check: a max_model_len beyond what it derives from the config (and beyond the
    config's model_max_length, which may allow more) stops it at start unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."""
    limit = facts.max_model_len
    if max_len <= limit or (facts.model_max_length is not None and max_len <= facts.model_max_length):
        return _Findings()
    if options.allow_long_max_model_len:
        return _Findings(notes=(
            f"max_model_len {max_len:,} is beyond the model's {limit:,}; vLLM accepts it because "
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 is set, but the model was not trained for it: outputs past "
            f"{limit:,} tokens may be wrong",
        ))  # fmt: skip
    return _Findings(
        problems=(
            f"max_model_len {max_len:,} is beyond the model's {limit:,} (from its config.json): vLLM refuses "
            f"to start; give --max-model-len {limit} or less, or set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 knowingly "
            "(the model was not trained for longer contexts)",
        ),
        suggestions=(f"--max-model-len {limit} (the model's own limit)",),
    )


def _memory_findings(sizing: Sizing, util: float, max_len: int) -> _Findings:
    """No room for the KV cache at all, or not for one request of ``max_len`` tokens."""
    b, cap = sizing.budget, sizing.capacity
    if b.kv_bytes <= 0:
        return _Findings(problems=(
            f"no memory left for the KV cache: weights {b.weights / GIB:.2f} GiB + activations "
            f"{b.activation / GIB:.2f} GiB + other {(b.non_torch + b.cuda_graphs) / GIB:.2f} GiB "
            f"exceed {util:.2f} x {b.total / GIB:.2f} GiB per GPU",
        ))  # fmt: skip
    if cap.max_concurrency < 1:
        return _Findings(problems=(
            f"one request of {max_len:,} tokens needs {cap.blocks_per_request:,} KV blocks; "
            f"{cap.num_blocks:,} fit ({b.kv_bytes / GIB:.2f} GiB)",
        ))  # fmt: skip
    return _Findings()


def _compatibility(facts: ModelFacts, options: PlanOptions, s: _Setting) -> _Compatibility:
    """The release's support for the architecture and quantization, the fp8 KV cache's GPU, the driver."""
    hw, version = s.hw, s.version
    problems: list[str] = []
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
    if s.kv_dtype.startswith("fp8") and hw.compute_capability is not None and hw.compute_capability < (8, 0):
        problems.append(f"an fp8 KV cache needs compute capability >= 8.0; this GPU has {hw.cc_text}")
    driver = compat.driver_runs(options.driver, version) if options.driver and not hw.is_cpu else None
    found = _Findings(problems=tuple(problems)) + _driver_findings(driver, options.driver or "")
    return _Compatibility(support, quant, driver, found)


def _driver_findings(driver: compat.DriverCheck | None, driver_version: str) -> _Findings:
    """A driver too old for the release's CUDA (and the newest release it runs), or one on minor-version compatibility."""
    if driver is None:
        return _Findings()
    if driver.level == "minor-compat":
        return _Findings(notes=(driver.message,))
    if driver.level != "no":
        return _Findings()
    newest = compat.newest_release_for_driver(driver_version)
    if not newest:
        return _Findings(problems=(driver.message,))
    cuda = compat.images()["releases"][newest]["cuda"]
    suggestion = f"vLLM {newest} (CUDA {cuda}) runs natively on driver {driver_version}"
    return _Findings(problems=(driver.message,), suggestions=(suggestion,))


def _cpu_dtype_notes(options: PlanOptions, s: _Setting) -> tuple[str, ...]:
    """On the CPU: why the dtype was chosen, or a warning when the one asked for runs slow here."""
    if not s.hw.is_cpu:
        return ()
    if not options.dtype or options.dtype == "auto":
        return (f"dtype {s.dtype}: {s.cpu.reason}",)
    if s.dtype != s.cpu.dtype and s.dtype in ("bfloat16", "float16"):
        return (f"dtype {s.dtype} asked for, but {s.cpu.reason} (--dtype {s.cpu.dtype} recommended)",)
    return ()


def _engine_settings(options: PlanOptions, s: _Setting, fit: _Fit) -> EngineSettings:
    """The engine arguments that differ from vLLM's defaults: exactly the flags serve passes."""
    return EngineSettings(
        max_model_len=fit.max_len,
        tensor_parallel_size=fit.tp if fit.tp > 1 else None,
        pipeline_parallel_size=fit.pp if fit.pp > 1 else None,
        gpu_memory_utilization=None if s.hw.is_cpu else s.util,
        kv_cache_dtype=s.kv_dtype if s.kv_dtype != "auto" else None,
        quantization=options.quantization or None,
        max_num_seqs=options.max_num_seqs or None,
        dtype=s.dtype if s.hw.is_cpu and (not options.dtype or options.dtype == "auto") else None,
    )


def _choose_parallel(
    facts: ModelFacts,
    options: PlanOptions,
    hw: Hardware,
    tp_checks: tuple[ParallelCheck, ...],
    evaluate: Callable[[int, int], Sizing],
) -> _Parallel:
    """The given sizes, else the smallest valid tp (then pp) on the GPUs at hand that holds one request."""
    if options.tensor_parallel_size or options.pipeline_parallel_size:
        return _Parallel(options.tensor_parallel_size or 1, options.pipeline_parallel_size or 1)
    if hw.is_cpu:
        return _Parallel(1, 1)
    valid = [c.size for c in tp_checks if c.ok and c.size <= hw.count]
    for tp in valid:
        if evaluate(tp, 1).holds_one_request:
            return _Parallel(tp, 1)
    for tp in valid:
        for pp in range(2, hw.count // tp + 1):
            if check_pp(facts, pp, gpus=hw.count, tp=tp).ok and evaluate(tp, pp).holds_one_request:
                return _Parallel(tp, pp)
    return _Parallel(max(valid) if valid else 1, 1)


def _alternatives(facts: ModelFacts, ev: _Evaluator, fit: _Fit) -> list[str]:
    """What would fit: more GPUs, a quantized variant, an fp8 KV cache, a shorter max length."""
    out: list[str] = []
    hw, tp_checks, max_len, budget = ev.hw, fit.tp_checks, fit.max_len, fit.sizing.budget
    if hw.key:
        for tp in (c.size for c in check_all(facts, 64)):
            if tp <= hw.count:
                continue
            more = replace(ev, hw=replace(hw, count=tp))(facts, tp, 1, max_len)
            if more.holds_one_request:
                out.append(
                    f"{tp} x {hw.key} with --tensor-parallel-size {tp} ({more.capacity.max_concurrency:.1f} requests of {max_len:,} tokens)"
                )
                break
    if facts.quant is None:
        for label, ratio in (
            ("an FP8 variant (about half the weight bytes)", 0.5),
            ("a 4-bit AWQ/GPTQ variant (about a quarter)", 0.27),
        ):
            tp = 1 if hw.count == 1 else _largest_valid(tp_checks, hw.count)
            smaller = ev(_scale_weights(facts, ratio), tp, 1, max_len)
            if smaller.holds_one_request:
                out.append(
                    f"{label} on the same GPUs ({smaller.capacity.max_concurrency:.1f} requests of {max_len:,} tokens)"
                )
                break
    if ev.kv_dtype == "auto" and budget.kv_bytes > 0 and facts.dtype_bytes > 1:
        cap = replace(ev, kv_dtype="fp8")(facts, _largest_valid(tp_checks, hw.count), 1, max_len).capacity
        if cap.max_concurrency >= 1:
            out.append(f"--kv-cache-dtype fp8 ({cap.max_concurrency:.1f} requests of {max_len:,} tokens)")
    if budget.kv_bytes > 0:
        fitted = max_len_that_fits(fit.sizing.layout, budget.kv_bytes, budget.batched_tokens, max_len)
        if 16 <= fitted < max_len:
            out.append(f"--max-model-len {fitted:,} (the longest one request can hold here)")
    return out


def _largest_valid(tp_checks: tuple[ParallelCheck, ...], count: int) -> int:
    """The largest tensor parallel size that splits the model on ``count`` GPUs (1 when none does)."""
    valid = [c.size for c in tp_checks if c.ok and c.size <= count]
    return max(valid) if valid else 1


def check_all(facts: ModelFacts, limit: int) -> list[ParallelCheck]:
    """The tensor parallel sizes up to ``limit`` that split the model, whatever the GPU count."""
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

    def __call__(self, facts: ModelFacts, tp: int, pp: int, max_len: int) -> Sizing:
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
        return Sizing(layout, budget, cap)
