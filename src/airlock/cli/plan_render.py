"""How ``airlock plan`` shows its results: a plan as tables or JSON, where its facts came from (a local
folder, or the Hub with the bytes read), the crossing (bytes, volumes, copy time) and the GPU catalog.

Importing this module stays cheap: rich and the plan package are imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from airlock.cli.output import out

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from airlock.plan.crossing import Crossing
    from airlock.plan.facts import ModelFacts
    from airlock.plan.hub import HubModel
    from airlock.plan.llamacpp import LlamaCppPlan
    from airlock.plan.planner import Plan


@dataclass(frozen=True)
class Planned:
    """One target's plan, under the target's name; ``hub``: its facts were read from the Hub."""

    name: str
    plan: Plan | LlamaCppPlan
    hub: HubModel | None = None


def print_json(results: list[Planned], *, single: bool, crossing: Crossing | None = None) -> None:
    """The plans as JSON on stdout: one object for a named model, a list for a spec (an object with
    ``models`` and ``crossing`` when the crossing was planned too)."""
    import json

    from airlock.plan.planner import Plan
    from airlock.plan.serialize import llamacpp_plan_to_dict, plan_to_dict

    data = [
        {
            "name": r.name,
            **(plan_to_dict(r.plan) if isinstance(r.plan, Plan) else llamacpp_plan_to_dict(r.plan)),
            **({"hub": _hub_dict(r.hub)} if r.hub is not None else {}),
        }
        for r in results
    ]
    value: object = data[0] if single else data
    if crossing is not None:
        value = {"models": data, "crossing": _crossing_dict(crossing)}
    print(json.dumps(value, indent=1))


def _hub_dict(h: HubModel) -> dict[str, object]:
    return {
        "repo": h.repo, "revision": h.revision, "commit": h.commit, "endpoint": h.endpoint,
        "gguf": h.gguf, "requests": h.read.requests, "bytes_read": h.read.bytes,
        "from_cache": h.read.requests == 0, "cache_file": str(h.cache_file),
    }  # fmt: skip


def _crossing_dict(c: Crossing) -> dict[str, object]:
    o = c.options
    return {
        "items": [
            {"kind": i.item.kind, "name": i.item.name, "files": len(i.item.files), "bytes": i.item.bytes if i.item.known else None,
             "carried_bytes": i.carried if i.item.known else None, "held_bytes": i.held, "note": i.item.note}
            for i in c.items
        ],
        "carried_bytes": c.carried_bytes, "held_bytes": c.held_bytes, "unknown": list(c.unknown),
        "volume_size": o.volume_size, "parity_percent": o.parity_percent, "data_volumes": c.data_volumes,
        "parity_volumes": c.parity_volumes, "written_bytes": c.written_bytes,
        "media_bytes_per_s": o.media_bytes_per_s, "speed_source": o.speed_source or None,
        "copy_seconds": None if c.copy_seconds is None else round(c.copy_seconds, 1), "base": o.base is not None,
    }  # fmt: skip


def render_crossing(c: Crossing) -> None:
    """What pack would carry, item by item, then the volumes and the copy time."""
    from rich.table import Table

    from airlock.common.fileio import human
    from airlock.common.words import counted

    o = c.options
    t = Table(title="the crossing (what pack would carry, before compression)", title_justify="left")
    for col, justify in (("kind", "left"), ("name", "left"), ("files", "right"), ("carried", "right")):
        t.add_column(col, justify="right" if justify == "right" else "left")
    if o.base is not None:
        t.add_column("held there", justify="right")
    t.add_column("note", style="dim")
    for i in c.items:
        size = human(i.carried) if i.item.known else "unknown"
        row: list[str | Text] = [
            i.item.kind,
            _text(i.item.name),
            str(len(i.item.files)) if i.item.known else "",
            size,
        ]
        if o.base is not None:
            row.append(human(i.held) if i.held else "")
        t.add_row(*row, _text(i.item.note))
    out.print(t)
    unknown = f" + {counted(len(c.unknown), 'item')} of unknown size" if c.unknown else ""
    held = f" ({human(c.held_bytes)} already there)" if o.base is not None else ""
    size = f" of {human(o.volume_size)}" if o.volume_size else ""
    parity = (
        f" + {counted(c.parity_volumes, 'parity volume')} ({o.parity_percent:g}%)" if c.parity_volumes else ""
    )
    out.print(
        _line(("carried: ", "bold"), f"{human(c.carried_bytes)}{unknown}{held}; "
              f"{counted(c.data_volumes, 'volume')}{size}{parity}, {human(c.written_bytes)} written")
    )  # fmt: skip
    if c.copy_seconds is not None and o.media_bytes_per_s:
        out.print(
            _line(
                ("copy: ", "bold"),
                f"{_duration(c.copy_seconds)} at {human(o.media_bytes_per_s)}/s ({o.speed_source})",
            )
        )
    else:
        out.print(
            _line(("copy: ", "bold"), ("give --media-speed 200MB/s or --media DIR for the copy time", "dim"))
        )
    out.print()


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _hub_row(h: HubModel) -> Text:
    from airlock.common.fileio import human

    where = f"{h.repo} @ {h.commit[:12]}" + (f" ({h.revision})" if h.revision != h.commit else "")
    if h.gguf:
        where += f", {h.gguf}"
    read = (
        f"from airlock's cache ({h.cache_file.parent})"
        if h.read.requests == 0
        else f"{h.read.requests} requests, {human(h.read.bytes)} read from {h.endpoint}"
    )
    return _line(where, ("  " + read, "dim"))


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


def render(r: Planned) -> None:
    """A vLLM plan or a llama.cpp plan, as tables."""
    from airlock.plan.planner import Plan

    if isinstance(r.plan, Plan):
        _render(r.plan, f"plan: {r.name}", r.hub)
    else:
        _render_llamacpp(r.plan, f"plan: {r.name} (llama.cpp)")


def _render(p: Plan, title: str, hub: HubModel | None = None) -> None:
    """The plan as tables: model (and the Hub read) and target, memory (per GPU, or on the CPU), KV
    cache, tp sizes, compatibility, verdict."""
    for table in (_head_table(p, title, hub), _memory_table(p), _kv_table(p), _tp_table(p), _compat_table(p)):
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


def _head_table(p: Plan, title: str, hub: HubModel | None = None) -> Table:
    """What is planned: the model's size and shape, the target, and the vLLM setting."""
    from rich.table import Table

    f, hw, b = p.facts, p.hardware, p.budget
    head = Table(title=_text(title), show_header=False, title_justify="left", box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    if hub is not None:
        head.add_row("Hub", _hub_row(hub))
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


def print_catalog(as_json: bool) -> None:
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
