"""``airlock plan``: sizes, checks and engine arguments for a model on a target, as tables or JSON."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from airlock.errors import ConfigError
from airlock.plan.apply import model_folder, options_for
from airlock.plan.facts import read_facts
from airlock.plan.hardware import GIB, list_gpus
from airlock.plan.locate import locate_model
from airlock.plan.planner import Plan, PlanOptions, plan
from airlock.plan.serialize import plan_to_dict
from airlock.settings import Settings
from airlock.spec import Spec, VllmEngineSpec, load_spec
from airlock.store.resolve import spec_store

out = Console(highlight=False)


def _gib(n: int) -> str:
    return f"{n / GIB:,.2f} GiB"


def _render(p: Plan, title: str) -> None:
    f, hw, b, c, lay = p.facts, p.hardware, p.budget, p.capacity, p.layout
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
    out.print(head)

    mem = Table(title="memory per GPU", title_justify="left")
    mem.add_column("part")
    mem.add_column("size", justify="right")
    mem.add_column("how", style="dim")
    if hw.is_cpu:
        mem.add_row("KV cache", _gib(b.kv_bytes) if b.kv_bytes else "auto", "VLLM_CPU_KVCACHE_SPACE")
        mem.add_row("weights", _gib(b.weights), "in system memory")
    else:
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
    out.print(mem)

    kv = Table(title="KV cache", title_justify="left", show_header=False)
    kv.add_column(style="bold")
    kv.add_column(justify="right")
    rep = f" (each kv head on {lay.replicated} GPUs)" if lay.replicated > 1 and not f.mla else ""
    kv.add_row("bytes per token per GPU", f"{lay.bytes_per_token:,}{rep}")
    kv.add_row(
        "block size / blocks",
        f"{lay.block_size} / {c.num_blocks:,}" if not p.informational else f"{lay.block_size} / auto",
    )
    if not p.informational:
        kv.add_row("capacity (as vLLM logs it)", f"{c.tokens:,} tokens")
        kv.add_row(f"concurrent {p.max_model_len:,}-token sequences", f"{c.max_concurrency:,.2f}")
    out.print(kv)

    par = Table(title="tensor parallel sizes", title_justify="left")
    par.add_column("tp", justify="right")
    par.add_column("ok")
    par.add_column("why")
    for t in p.tp_checks:
        par.add_row(str(t.size), "[green]yes[/]" if t.ok else "[red]no[/]", "; ".join(t.reasons or t.notes))
    out.print(par)

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
    out.print(checks)
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
    if list_gpus_flag:
        _print_catalog(as_json)
        return
    flags: dict[str, object] = {
        "gpu": gpu, "gpus": gpus, "gpu_memory": gpu_memory, "driver": driver, "cpu": cpu or None,
        "cpu_kv_space_gib": cpu_kv_space, "max_model_len": max_model_len,
        "gpu_memory_utilization": gpu_memory_utilization, "quantization": quantization,
        "kv_cache_dtype": None if kv_cache_dtype == "auto" else kv_cache_dtype, "vllm_version": vllm_version,
        "tensor_parallel_size": tensor_parallel_size, "pipeline_parallel_size": pipeline_parallel_size,
        "max_num_seqs": max_num_seqs,
    }  # fmt: skip
    given = {k: v for k, v in flags.items() if v is not None}
    targets: list[tuple[str, Path, PlanOptions]] = []
    spec = (
        load_spec(config)
        if config
        else (load_spec(Path("airlock.yaml")) if model is None and Path("airlock.yaml").is_file() else None)
    )
    if model is not None:
        folder = locate_model(model, cache_dir=hf_cache or (spec.store if spec else None), revision=revision)
        base = options_for(spec, VllmEngineSpec(kind="vllm"), os.environ) if spec and spec.hardware else None
        targets.append((model, folder, _merge(base, given)))
    elif spec is not None:
        targets += _spec_targets(spec, given)
    else:
        raise ConfigError("give a model (folder, .gguf or repo id) or --config airlock.yaml")
    results = [(name, plan(read_facts(folder), opts)) for name, folder, opts in targets]
    if as_json:
        data = [{"name": n, **plan_to_dict(p)} for n, p in results]
        print(json.dumps(data[0] if model is not None else data, indent=1))
    else:
        for name, p in results:
            _render(p, f"plan: {name}")
    if any(p.problems for _, p in results):
        raise typer.Exit(6)


def _merge(base: PlanOptions | None, given: dict[str, object]) -> PlanOptions:
    from dataclasses import replace

    opts = base or PlanOptions()
    if given.get("gpu") or given.get("gpu_memory") or given.get("cpu"):
        opts = replace(opts, gpu=None, gpu_memory=None, gpus=None, cpu=False)
    opts = replace(opts, **given)  # type: ignore[arg-type]
    if not (opts.gpu or opts.gpu_memory or opts.cpu):
        opts = replace(opts, cpu=True)
    return opts


def _spec_targets(spec: Spec, given: dict[str, object]) -> list[tuple[str, Path, PlanOptions]]:
    targets = []
    for m in spec.models:
        if isinstance(m.engine, VllmEngineSpec):
            folder = model_folder(m, spec_store(spec, Settings.from_env()))
            if folder is not None:
                targets.append((m.name, folder, _merge(options_for(spec, m.engine, os.environ), given)))
        elif m.gguf is not None:
            targets.append((m.name, m.gguf, _merge(None, {**given, "cpu": True})))
    if not targets:
        raise ConfigError("the spec has no model with local files to plan")
    return targets


def _print_catalog(as_json: bool) -> None:
    rows = list_gpus()
    if as_json:
        print(
            json.dumps(
                [
                    {"key": k, "name": n, "total_gib": round(g, 2), "compute_capability": cc, "estimated": e}
                    for k, n, g, cc, e in rows
                ],
                indent=1,
            )
        )
        return
    t = Table(title="GPU catalog (memory as the driver reports it)")
    for col in ("name", "GPU", "GiB", "compute", "source"):
        t.add_column(col)
    for k, n, g, cc, e in rows:
        t.add_row(k, n, f"{g:.2f}", cc, "estimated" if e else "measured")
    out.print(t)
