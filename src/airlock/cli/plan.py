"""``airlock plan``: sizes, checks and engine arguments for a model on a target, as tables or JSON.

Importing this module stays cheap (``airlock --help`` loads it): the planner, the model readers and
the store are imported inside the command.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from airlock.cli.output import out
from airlock.errors import ConfigError

if TYPE_CHECKING:
    from rich.table import Table

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


@dataclass(frozen=True)
class _Planned:
    """One target's plan, under the target's name."""

    name: str
    plan: Plan


def plan_cli(
    model: Annotated[
        str | None,
        typer.Argument(help="A model folder, a .gguf file, or a Hugging Face id in the local cache."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Plan the spec's vLLM models (and take its hardware)."),
    ] = None,
    gpu: Annotated[str | None, typer.Option(help="GPU from the catalog, with a count: h100-80gb:2.")] = None,
    gpus: Annotated[int | None, typer.Option(help="Number of GPUs.")] = None,
    gpu_memory: Annotated[
        str | None, typer.Option(help="Per-GPU memory instead of a catalog name: 80GiB.")
    ] = None,
    driver: Annotated[str | None, typer.Option(help="The host's NVIDIA driver version: 550.54.14.")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Plan for vLLM's CPU build.")] = False,
    cpu_kv_space: Annotated[
        int | None, typer.Option(help="VLLM_CPU_KVCACHE_SPACE in GiB (with --cpu).")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(help="Context length to plan for (default: the model's).")
    ] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option(help="vLLM's share of GPU memory.")] = None,
    quantization: Annotated[str | None, typer.Option(help="vLLM --quantization.")] = None,
    kv_cache_dtype: Annotated[str, typer.Option(help="auto, fp8, fp8_e4m3, fp8_e5m2.")] = "auto",
    vllm_version: Annotated[
        str | None, typer.Option(help="The vLLM release the site runs (default: newest tabled).")
    ] = None,
    tensor_parallel_size: Annotated[
        int | None, typer.Option("--tensor-parallel-size", "--tp", help="Fix tp instead of choosing.")
    ] = None,
    pipeline_parallel_size: Annotated[
        int | None, typer.Option("--pipeline-parallel-size", "--pp", help="Fix pp.")
    ] = None,
    max_num_seqs: Annotated[
        int | None, typer.Option(help="vLLM --max-num-seqs (sizes the sampler's profiling run).")
    ] = None,
    hf_cache: Annotated[
        Path | None, typer.Option(help="Hugging Face cache or airlock store to look a repo id up in.")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Revision of a repo id in the cache.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    list_gpus_flag: Annotated[
        bool, typer.Option("--list-gpus", help="List the GPU catalog and exit.")
    ] = False,
) -> None:
    """Will a model start on that hardware, how much KV cache will it have, and with which engine arguments."""
    from airlock.plan.facts import read_facts
    from airlock.plan.planner import plan

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
    results = [_Planned(t.name, plan(read_facts(t.folder), t.options)) for t in targets]
    if as_json:
        _print_json(results, single=model is not None)
    else:
        for r in results:
            _render(r.plan, f"plan: {r.name}")
    if any(r.plan.problems for r in results):
        raise typer.Exit(6)


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
    from airlock.spec import VllmEngineSpec

    folder = locate_model(model, cache_dir=hf_cache or (spec.store if spec else None), revision=revision)
    base = options_for(spec, VllmEngineSpec(kind="vllm"), os.environ) if spec and spec.hardware else None
    return _Target(model, folder, _merge(base, flags))


def _spec_targets(spec: Spec, flags: _Flags) -> list[_Target]:
    """The spec's vLLM models with local files, and its GGUF models (planned for the CPU)."""
    import os

    from airlock.plan.apply import model_folder, options_for
    from airlock.settings import Settings
    from airlock.spec import VllmEngineSpec
    from airlock.store.resolve import spec_store

    targets = []
    for m in spec.models:
        if isinstance(m.engine, VllmEngineSpec):
            folder = model_folder(m, spec_store(spec, Settings.from_env()))
            if folder is not None:
                targets.append(
                    _Target(m.name, folder, _merge(options_for(spec, m.engine, os.environ), flags))
                )
        elif m.gguf is not None:
            targets.append(_Target(m.name, m.gguf, _merge(None, _on_the_cpu(flags))))
    if not targets:
        raise ConfigError("the spec has no model with local files to plan")
    return targets


def _on_the_cpu(flags: _Flags) -> _Flags:
    """The flags for a llama.cpp (GGUF) model, which runs on the CPU: the GPU target and the GPU
    parallelism given for the spec's vLLM models do not apply to it."""
    return replace(
        flags, cpu=True, gpu=None, gpus=None, gpu_memory=None, driver=None,
        tensor_parallel_size=None, pipeline_parallel_size=None,
    )  # fmt: skip


def _given(flag: _T | None, current: _T) -> _T:
    """The flag when it was given, else what the options already hold."""
    return current if flag is None else flag


def _merge(base: PlanOptions | None, flags: _Flags) -> PlanOptions:
    """The spec's options (or the defaults) with the given flags on top; a target flag replaces the
    spec's whole target, and with no target at all the plan is for the CPU."""
    from airlock.plan.planner import PlanOptions

    opts = base or PlanOptions()
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

    from airlock.plan.serialize import plan_to_dict

    data = [{"name": r.name, **plan_to_dict(r.plan)} for r in results]
    print(json.dumps(data[0] if single else data, indent=1))


def _gib(n: int) -> str:
    from airlock.plan.hardware import GIB

    return f"{n / GIB:,.2f} GiB"


def _render(p: Plan, title: str) -> None:
    """The plan as tables: model and target, memory per GPU, KV cache, tp sizes, compatibility, verdict."""
    for table in (_head_table(p, title), _memory_table(p), _kv_table(p), _tp_table(p), _compat_table(p)):
        out.print(table)
    _print_verdict(p)


def _head_table(p: Plan, title: str) -> Table:
    """What is planned: the model's size and shape, the target, and the vLLM setting."""
    from rich.table import Table

    f, hw, b = p.facts, p.hardware, p.budget
    head = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    kinds = ", ".join(f"{n} {k}" for k in sorted(set(f.layer_kinds)) if (n := f.layer_kinds.count(k)))
    attn = (
        f"MLA (latent {f.mla.kv_lora_rank} + rope {f.mla.qk_rope_head_dim})"
        if f.mla
        else f"{f.num_heads} heads, {f.num_kv_heads} kv heads, head_dim {f.head_dim}"
    )
    head.add_row(
        "model",
        f"{f.architecture} ({f.format}), {f.param_count / 1e9:,.2f} B params, {_gib(f.weight_bytes)} of weights",
    )
    head.add_row("shape", f"{f.num_layers} layers ({kinds}); {attn}; vocab {f.vocab_size:,}")
    head.add_row(
        "target",
        f"{hw.count} x {hw.name}"
        + (f", compute {hw.cc_text}" if hw.compute_capability else "")
        + f"  [dim]({hw.memory_source})[/]",
    )
    head.add_row(
        "vLLM",
        f"{p.vllm_version} ({b.engine} engine), dtype {p.dtype}, KV cache {p.kv_dtype}, tp {p.tp}, pp {p.pp}",
    )
    return head


def _memory_table(p: Plan) -> Table:
    """Memory per GPU, from the total down to the KV cache (on the CPU: the KV space and the weights)."""
    from rich.table import Table

    b = p.budget
    mem = Table(title="memory per GPU", title_justify="left")
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
    kv.add_row("bytes per token per GPU", f"{lay.bytes_per_token:,}{rep}")
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
        par.add_row(str(t.size), "[green]yes[/]" if t.ok else "[red]no[/]", "; ".join(t.reasons or t.notes))
    return par


def _compat_table(p: Plan) -> Table:
    """The release's support for the architecture, the quantization and the driver."""
    from rich.table import Table

    checks = Table(title="compatibility", title_justify="left", show_header=False)
    checks.add_column(style="bold")
    checks.add_column()
    checks.add_row("architecture", ("[green]ok[/] " if p.support.ok else "[red]no[/] ") + p.support.message)
    if p.quant:
        checks.add_row("quantization", ("[green]ok[/] " if p.quant.ok else "[red]no[/] ") + p.quant.message)
    if p.driver:
        style = {"native": "[green]ok[/] ", "minor-compat": "[yellow]risky[/] "}.get(
            p.driver.level, "[red]no[/] "
        )
        checks.add_row("driver", style + p.driver.message)
    return checks


def _print_verdict(p: Plan) -> None:
    """Notes, problems and what would fit, then fits or not with the engine arguments."""
    import shlex

    for note in p.notes:
        out.print(f"[dim]note:[/] {note}")
    for problem in p.problems:
        out.print(f"[bold red]cannot start:[/] {problem}")
    for s in p.suggestions:
        out.print(f"[bold yellow]would fit:[/] {s}")
    verdict = (
        "[yellow]informational (CPU)[/]"
        if p.informational
        else "[bold green]fits[/]"
        if p.fits
        else "[bold red]does not fit[/]"
    )
    out.print(f"{verdict}   engine args: [bold]{shlex.join(p.engine_args) or '(none)'}[/]\n")


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
