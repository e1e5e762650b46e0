"""``airlock plan``: sizes, checks and engine arguments for a model on a target, as tables or JSON.

Importing this module stays cheap (``airlock --help`` loads it): the planner, the model readers and
the store are imported inside the command.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from airlock.cli.output import out
from airlock.errors import ConfigError

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from airlock.plan.facts import ModelFacts
    from airlock.plan.llamacpp import LlamaCppOptions, LlamaCppPlan
    from airlock.plan.planner import Plan, PlanOptions
    from airlock.spec import Spec

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Flags:
    """The plan options given on the command line (None: not given, so the spec's or the default holds)."""

    gpu: str | None = None
    gpus: int | None = None
    gpu_memory: str | None = None
    driver: str | None = None
    cpu: bool | None = None
    cpu_kv_space_gib: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    vllm_version: str | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    max_num_seqs: int | None = None


@dataclass(frozen=True)
class _Target:
    """One model to plan: its name, where its files are, and the options to plan it with."""

    name: str
    folder: Path
    options: PlanOptions
    llamacpp: LlamaCppOptions | None = None  # a llama.cpp model: planned for llama.cpp, not vLLM


@dataclass(frozen=True)
class _Planned:
    """One target's plan, under the target's name."""

    name: str
    plan: Plan | LlamaCppPlan


_TARGET = "Target (default: vLLM's CPU build)"
_VLLM = "vLLM settings"
_FIND = "Finding the model"
_PARALLEL = "Parallelism (default: the smallest that fits)"


def plan_cli(
    model: Annotated[
        str | None,
        typer.Argument(help="Model folder, .gguf file, or repo id (HF cache or store)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Plan the spec's models on its hardware.", rich_help_panel=_FIND),
    ] = None,
    hf_cache: Annotated[
        Path | None,
        typer.Option(help="Look only in this HF cache or store.", rich_help_panel=_FIND),
    ] = None,
    revision: Annotated[
        str | None, typer.Option(help="Revision of a repo id.", rich_help_panel=_FIND)
    ] = None,
    gpu: Annotated[
        str | None, typer.Option(help="Catalog GPU and count: h100-80gb:2.", rich_help_panel=_TARGET)
    ] = None,
    gpus: Annotated[
        int | None, typer.Option(help="GPU count (with --gpu or --gpu-memory).", rich_help_panel=_TARGET)
    ] = None,
    gpu_memory: Annotated[
        str | None, typer.Option(help="Memory per GPU, no catalog: 80GiB.", rich_help_panel=_TARGET)
    ] = None,
    driver: Annotated[
        str | None, typer.Option(help="NVIDIA driver version: 550.54.14.", rich_help_panel=_TARGET)
    ] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="vLLM's CPU build.", rich_help_panel=_TARGET)] = False,
    cpu_kv_space: Annotated[
        int | None, typer.Option(help="VLLM_CPU_KVCACHE_SPACE, GiB.", rich_help_panel=_TARGET)
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(help="Context length (default: model's).", rich_help_panel=_VLLM)
    ] = None,
    gpu_memory_utilization: Annotated[
        float | None, typer.Option(help="vLLM's share of GPU memory.", rich_help_panel=_VLLM)
    ] = None,
    quantization: Annotated[
        str | None, typer.Option(help="vLLM --quantization.", rich_help_panel=_VLLM)
    ] = None,
    kv_cache_dtype: Annotated[
        str, typer.Option(help="auto, fp8, fp8_e4m3, fp8_e5m2.", rich_help_panel=_VLLM)
    ] = "auto",
    vllm_version: Annotated[
        str | None, typer.Option(help="The site's vLLM (default: newest).", rich_help_panel=_VLLM)
    ] = None,
    tensor_parallel_size: Annotated[
        int | None,
        typer.Option(
            "--tp", "--tensor-parallel-size", help="Tensor parallel size.", rich_help_panel=_PARALLEL
        ),
    ] = None,
    pipeline_parallel_size: Annotated[
        int | None,
        typer.Option(
            "--pp", "--pipeline-parallel-size", help="Pipeline parallel size.", rich_help_panel=_PARALLEL
        ),
    ] = None,
    max_num_seqs: Annotated[
        int | None, typer.Option(help="vLLM --max-num-seqs.", rich_help_panel=_VLLM)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    list_gpus_flag: Annotated[
        bool, typer.Option("--list-gpus", help="List the GPU catalog and exit.")
    ] = False,
) -> None:
    """Will a model start on that hardware, how much KV cache will it have, and with which engine arguments.

    A spec's llama.cpp models are planned for llama.cpp, against this host's RAM.
    """
    if list_gpus_flag:
        _print_catalog(as_json)
        return
    flags = _Flags(
        gpu=gpu, gpus=gpus, gpu_memory=gpu_memory, driver=driver, cpu=cpu or None,
        cpu_kv_space_gib=cpu_kv_space, max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization, quantization=quantization,
        kv_cache_dtype=None if kv_cache_dtype == "auto" else kv_cache_dtype, vllm_version=vllm_version,
        tensor_parallel_size=tensor_parallel_size, pipeline_parallel_size=pipeline_parallel_size,
        max_num_seqs=max_num_seqs,
    )  # fmt: skip
    spec = _spec_in_use(config, model)
    if model is not None:
        targets = [_model_target(model, spec, flags, hf_cache=hf_cache, revision=revision)]
    elif spec is not None:
        targets = _spec_targets(spec, flags)
    else:
        raise ConfigError("give a model (folder, .gguf or repo id) or --config airlock.yaml")
    results = [_plan_target(t, flags) for t in targets]
    if as_json:
        _print_json(results, single=model is not None)
    else:
        for r in results:
            _render_any(r)
    if any(r.plan.problems for r in results):
        raise typer.Exit(6)


def _plan_target(t: _Target, flags: _Flags) -> _Planned:
    """One target planned for its engine: llama.cpp against this host's RAM, else vLLM."""
    from airlock.plan.facts import read_facts
    from airlock.plan.planner import plan

    facts = read_facts(t.folder)
    if t.llamacpp is None:
        return _Planned(t.name, plan(facts, t.options))
    from airlock.plan.llamacpp import host_ram, plan_llamacpp

    p = plan_llamacpp(facts, t.llamacpp, ram_bytes=host_ram())
    given = [f"--{f.name.replace('_', '-')}" for f in fields(flags) if getattr(flags, f.name) is not None]
    if given:
        note = f"{', '.join(given)}: for vLLM models; llama.cpp takes its settings from the spec's engine"
        p = replace(p, notes=(*p.notes, note))
    return _Planned(t.name, p)


def _spec_in_use(config: Path | None, model: str | None) -> Spec | None:
    """The spec given with --config, else ./airlock.yaml when no model is named and it exists."""
    from airlock.spec import load_spec

    if config:
        return load_spec(config)
    if model is None and Path("airlock.yaml").is_file():
        return load_spec(Path("airlock.yaml"))
    return None


def _model_target(
    model: str, spec: Spec | None, flags: _Flags, *, hf_cache: Path | None, revision: str | None
) -> _Target:
    """The named model, found in its folder or the cache, on the spec's hardware when it has one."""
    import os

    from airlock.plan.apply import options_for
    from airlock.plan.locate import locate_model
    from airlock.settings import Settings
    from airlock.spec import VllmEngineSpec

    store = spec.store if spec and spec.store else Settings.from_env().store
    folder = locate_model(model, cache_dir=hf_cache, revision=revision, store=store)
    base = options_for(spec, VllmEngineSpec(kind="vllm"), os.environ) if spec and spec.hardware else None
    return _Target(model, folder, _merge(base, flags))


def _spec_targets(spec: Spec, flags: _Flags) -> list[_Target]:
    """The spec's vLLM models with local files (planned for vLLM), and its llama.cpp models (for llama.cpp)."""
    import os

    from airlock.plan.apply import model_folder, options_for
    from airlock.plan.llamacpp import llamacpp_options
    from airlock.settings import Settings
    from airlock.spec import LlamaCppEngineSpec, VllmEngineSpec
    from airlock.store.resolve import resolve_gguf, spec_store

    store = spec_store(spec, Settings.from_env())
    targets = []
    for m in spec.models:
        if isinstance(m.engine, VllmEngineSpec):
            folder = model_folder(m, store)
            if folder is not None:
                targets.append(
                    _Target(m.name, folder, _merge(options_for(spec, m.engine, os.environ), flags))
                )
        elif isinstance(m.engine, LlamaCppEngineSpec):
            e = m.engine
            targets.append(
                _Target(
                    m.name,
                    resolve_gguf(m, store),
                    _merge(None, _Flags()),
                    llamacpp_options(e.ctx_size, e.parallel, list(e.args)),
                )
            )
    if not targets:
        raise ConfigError("the spec has no model with local files to plan")
    return targets


def _given(flag: _T | None, current: _T) -> _T:
    """The flag when it was given, else what the options already hold."""
    return current if flag is None else flag


def _merge(base: PlanOptions | None, flags: _Flags) -> PlanOptions:
    """The spec's options (or the defaults) with the given flags on top; a target flag replaces the
    spec's whole target, and with no target at all the plan is for the CPU."""
    from airlock.plan.planner import PlanOptions

    if base is None:
        import os

        from airlock.plan.planner import allows_long_max_model_len

        allow = allows_long_max_model_len(os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN"))
        base = PlanOptions(allow_long_max_model_len=allow)
    opts = base
    if flags.gpu or flags.gpu_memory or flags.cpu:
        opts = replace(opts, gpu=None, gpu_memory=None, gpus=None, cpu=False)
    opts = replace(
        opts,
        gpu=_given(flags.gpu, opts.gpu),
        gpus=_given(flags.gpus, opts.gpus),
        gpu_memory=_given(flags.gpu_memory, opts.gpu_memory),
        driver=_given(flags.driver, opts.driver),
        cpu=_given(flags.cpu, opts.cpu),
        cpu_kv_space_gib=_given(flags.cpu_kv_space_gib, opts.cpu_kv_space_gib),
        max_model_len=_given(flags.max_model_len, opts.max_model_len),
        gpu_memory_utilization=_given(flags.gpu_memory_utilization, opts.gpu_memory_utilization),
        quantization=_given(flags.quantization, opts.quantization),
        kv_cache_dtype=_given(flags.kv_cache_dtype, opts.kv_cache_dtype),
        vllm_version=_given(flags.vllm_version, opts.vllm_version),
        tensor_parallel_size=_given(flags.tensor_parallel_size, opts.tensor_parallel_size),
        pipeline_parallel_size=_given(flags.pipeline_parallel_size, opts.pipeline_parallel_size),
        max_num_seqs=_given(flags.max_num_seqs, opts.max_num_seqs),
    )
    if not (opts.gpu or opts.gpu_memory or opts.cpu):
        opts = replace(opts, cpu=True)
    return opts


def _print_json(results: list[_Planned], *, single: bool) -> None:
    """The plans as JSON on stdout: one object for a named model, a list for a spec."""
    import json

    from airlock.plan.planner import Plan
    from airlock.plan.serialize import llamacpp_plan_to_dict, plan_to_dict

    data = [
        {
            "name": r.name,
            **(plan_to_dict(r.plan) if isinstance(r.plan, Plan) else llamacpp_plan_to_dict(r.plan)),
        }
        for r in results
    ]
    print(json.dumps(data[0] if single else data, indent=1))


def _gib(n: int) -> str:
    from airlock.plan.hardware import GIB

    return f"{n / GIB:,.2f} GiB"


def _text(value: object, style: str = "") -> Text:
    """Text from the user, the disk or the model as it is: never read as rich markup or :emoji: codes."""
    from rich.text import Text

    return Text(str(value), style=style)


def _line(*parts: str | tuple[str, str]) -> Text:
    """One printed line: plain strings taken literally, (text, style) pairs styled."""
    from rich.text import Text

    return Text.assemble(*parts)


def _render_any(r: _Planned) -> None:
    """A vLLM plan or a llama.cpp plan, as tables."""
    from airlock.plan.planner import Plan

    if isinstance(r.plan, Plan):
        _render(r.plan, f"plan: {r.name}")
    else:
        _render_llamacpp(r.plan, f"plan: {r.name} (llama.cpp)")


def _render(p: Plan, title: str) -> None:
    """The plan as tables: model and target, memory (per GPU, or on the CPU), KV cache, tp sizes,
    compatibility, verdict."""
    for table in (_head_table(p, title), _memory_table(p), _kv_table(p), _tp_table(p), _compat_table(p)):
        out.print(table)
    _print_verdict(p)


def _model_row(f: ModelFacts) -> Text:
    return _text(
        f"{f.architecture} ({f.format}), {f.param_count / 1e9:,.2f} B params, {_gib(f.weight_bytes)} of weights"
    )


def _shape_row(f: ModelFacts) -> Text:
    kinds = ", ".join(f"{n} {k}" for k in sorted(set(f.layer_kinds)) if (n := f.layer_kinds.count(k)))
    attn = (
        f"MLA (latent {f.mla.kv_lora_rank} + rope {f.mla.qk_rope_head_dim})"
        if f.mla
        else f"{f.num_heads} heads, {f.num_kv_heads} kv heads, head_dim {f.head_dim}"
    )
    return _text(f"{f.num_layers} layers ({kinds}); {attn}; vocab {f.vocab_size:,}")


def _head_table(p: Plan, title: str) -> Table:
    """What is planned: the model's size and shape, the target, and the vLLM setting."""
    from rich.table import Table

    f, hw, b = p.facts, p.hardware, p.budget
    head = Table(title=_text(title), show_header=False, title_justify="left", box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    head.add_row("model", _model_row(f))
    head.add_row("shape", _shape_row(f))
    head.add_row(
        "target",
        _line(
            f"{hw.count} x {hw.name}" + (f", compute {hw.cc_text}" if hw.compute_capability else ""),
            (f"  ({hw.memory_source})", "dim"),
        ),
    )
    head.add_row(
        "vLLM",
        _text(
            f"{p.vllm_version} ({b.engine} engine), dtype {p.dtype}, KV cache {p.kv_dtype}, tp {p.tp}, pp {p.pp}"
        ),
    )
    return head


def _memory_table(p: Plan) -> Table:
    """Memory per GPU, from the total down to the KV cache (on the CPU: the KV space and the weights)."""
    from rich.table import Table

    b = p.budget
    mem = Table(title="memory (CPU)" if p.hardware.is_cpu else "memory per GPU", title_justify="left")
    mem.add_column("part")
    mem.add_column("size", justify="right")
    mem.add_column("how", style="dim")
    if p.hardware.is_cpu:
        mem.add_row("KV cache", _gib(b.kv_bytes) if b.kv_bytes else "auto", "VLLM_CPU_KVCACHE_SPACE")
        mem.add_row("weights", _gib(b.weights), "in system memory")
        return mem
    mem.add_row("total", _gib(b.total), "as the driver reports it")
    mem.add_row(f"x utilization {p.utilization:.2f}", _gib(b.requested), "vLLM's share")
    mem.add_row("- weights", _gib(b.weights), "safetensors headers / tp / pp")
    mem.add_row(
        "- activation peak",
        _gib(b.activation),
        f"profiling run: {b.batched_tokens:,} tokens, {b.max_num_seqs:,} sequences, {b.sampler} sampler",
    )
    mem.add_row("- non-torch", _gib(b.non_torch), "CUDA context, NCCL")
    mem.add_row("- CUDA graphs", _gib(b.cuda_graphs), "subtracted from vLLM 0.21 on")
    mem.add_row("= KV cache", _gib(b.kv_bytes), "", style="bold" if b.kv_bytes > 0 else "bold red")
    return mem


def _kv_table(p: Plan) -> Table:
    """KV bytes per token, blocks, and capacity in tokens and full-length sequences."""
    from rich.table import Table

    lay, c = p.layout, p.capacity
    kv = Table(title="KV cache", title_justify="left", show_header=False)
    kv.add_column(style="bold")
    kv.add_column(justify="right")
    rep = f" (each kv head on {lay.replicated} GPUs)" if lay.replicated > 1 and not p.facts.mla else ""
    per = "bytes per token" if p.hardware.is_cpu else "bytes per token per GPU"
    kv.add_row(per, f"{lay.bytes_per_token:,}{rep}")
    kv.add_row(
        "block size / blocks",
        f"{lay.block_size} / {c.num_blocks:,}" if not p.informational else f"{lay.block_size} / auto",
    )
    if not p.informational:
        kv.add_row("capacity (as vLLM logs it)", f"{c.tokens:,} tokens")
        kv.add_row(f"concurrent {p.max_model_len:,}-token sequences", f"{c.max_concurrency:,.2f}")
    return kv


def _tp_table(p: Plan) -> Table:
    """Each tensor parallel size tried, whether it splits the model, and why not."""
    from rich.table import Table

    par = Table(title="tensor parallel sizes", title_justify="left")
    par.add_column("tp", justify="right")
    par.add_column("ok")
    par.add_column("why")
    for t in p.tp_checks:
        par.add_row(str(t.size), _ok(t.ok), _text("; ".join(t.reasons or t.notes)))
    return par


def _ok(ok: bool) -> Text:
    return _text("yes", "green") if ok else _text("no", "red")


def _compat_table(p: Plan) -> Table:
    """The release's support for the architecture, the quantization and the driver."""
    from rich.table import Table

    checks = Table(title="compatibility", title_justify="left", show_header=False)
    checks.add_column(style="bold")
    checks.add_column()
    checks.add_row("architecture", _checked(p.support.ok, p.support.message))
    if p.quant:
        checks.add_row("quantization", _checked(p.quant.ok, p.quant.message))
    if p.driver:
        word, style = {"native": ("ok", "green"), "minor-compat": ("risky", "yellow")}.get(
            p.driver.level, ("no", "red")
        )
        checks.add_row("driver", _line((word, style), " ", p.driver.message))
    return checks


def _checked(ok: bool, message: str) -> Text:
    return _line(("ok", "green") if ok else ("no", "red"), " ", message)


def _print_findings(notes: tuple[str, ...], problems: tuple[str, ...], suggestions: tuple[str, ...]) -> None:
    for note in notes:
        out.print(_line(("note:", "dim"), " ", note))
    for problem in problems:
        out.print(_line(("cannot start:", "bold red"), " ", problem))
    for s in suggestions:
        out.print(_line(("would fit:", "bold yellow"), " ", s))


def _print_verdict(p: Plan) -> None:
    """Notes, problems and what would fit, then fits or not with the engine arguments."""
    import shlex

    _print_findings(p.notes, p.problems, p.suggestions)
    verdict = (
        ("informational (CPU)", "yellow")
        if p.informational and not p.problems
        else ("fits", "bold green")
        if p.fits
        else ("does not fit", "bold red")
    )
    out.print(_line(verdict, "   engine args: ", (shlex.join(p.engine_args) or "(none)", "bold")), "\n")


def _render_llamacpp(p: LlamaCppPlan, title: str) -> None:
    """A llama.cpp plan: the model, llama.cpp's context, the host RAM it takes, the verdict."""
    import shlex

    from rich.table import Table

    f, o = p.facts, p.options
    head = Table(title=_text(title), show_header=False, title_justify="left", box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    head.add_row("model", _model_row(f))
    head.add_row("shape", _shape_row(f))
    head.add_row(
        "engine", _text(f"llama.cpp (llama-server, CPU); model trained for {f.max_model_len:,} tokens")
    )
    head.add_row(
        "context",
        _text(
            f"ctx_size {p.ctx_size:,}" + (" (0: the model's)" if o.ctx_size == 0 else "")
            + f", {o.parallel} slots of {p.tokens_per_slot:,} tokens; cache {o.cache_type_k}/{o.cache_type_v}"
        ),
    )  # fmt: skip
    out.print(head)
    mem = Table(title="memory (host RAM)", title_justify="left")
    mem.add_column("part")
    mem.add_column("size", justify="right")
    mem.add_column("how", style="dim")
    mem.add_row("weights", _gib(p.file_bytes), "the GGUF file, mapped")
    mem.add_row(
        "+ KV cache",
        _gib(p.kv_bytes),
        f"{p.kv_layers} layers x {p.ctx_size:,} tokens x {f.num_kv_heads} kv heads x "
        f"(K {f.head_dim} + V {f.v_head_dim}) x {o.cache_type_k}/{o.cache_type_v}",
    )
    mem.add_row("= total", _gib(p.total_bytes), "", style="bold" if p.fits else "bold red")
    mem.add_row("host RAM", _gib(p.ram_bytes) if p.ram_bytes else "unknown", "this machine")
    out.print(mem)
    _print_findings(p.notes, p.problems, ())
    verdict = ("fits", "bold green") if p.fits else ("does not fit", "bold red")
    out.print(_line(verdict, "   llama-server args: ", (shlex.join(p.args), "bold")), "\n")


def _print_catalog(as_json: bool) -> None:
    """The GPU catalog as JSON or a table, memory as the driver reports it."""
    import json

    from rich.table import Table

    from airlock.plan.hardware import GIB, list_gpus

    rows = list_gpus()
    if as_json:
        print(
            json.dumps(
                [
                    {"key": g.key, "name": g.name, "total_gib": round(g.memory_bytes / GIB, 2),
                     "compute_capability": g.compute_capability, "estimated": g.estimated}
                    for g in rows
                ],
                indent=1,
            )
        )  # fmt: skip
        return
    t = Table(title="GPU catalog (memory as the driver reports it)")
    for col in ("name", "GPU", "GiB", "compute", "source"):
        t.add_column(col)
    for g in rows:
        t.add_row(
            g.key,
            g.name,
            f"{g.memory_bytes / GIB:.2f}",
            g.compute_capability,
            "estimated" if g.estimated else "measured",
        )
    out.print(t)
