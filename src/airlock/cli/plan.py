"""``airlock plan``: sizes, checks and engine arguments for a model on a target, as tables or JSON;
with a spec, the crossing too (bytes pack would carry, volumes, copy time).

A repo id is read from a local copy when there is one, else from the Hub (config, index and shard
headers only: ``airlock.plan.hub``). Rendering lives in ``plan_render``. Importing this module stays
cheap (``airlock --help`` loads it): the planner, the model readers and the store are imported
inside the command.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from airlock.cli.plan_render import Planned, print_catalog, print_json, render, render_crossing
from airlock.errors import ConfigError

if TYPE_CHECKING:
    from airlock.plan.crossing import Base, CarriedItem, Crossing
    from airlock.plan.facts import ModelFacts
    from airlock.plan.find import FindOptions
    from airlock.plan.hub import HubModel
    from airlock.plan.llamacpp import LlamaCppOptions
    from airlock.plan.planner import PlanOptions
    from airlock.spec import ModelSpec, Spec

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
    dtype: str | None = None


@dataclass(frozen=True)
class _Target:
    """One model to plan: its name, its facts (read from a local copy or the Hub), the options to plan
    it with."""

    name: str
    facts: ModelFacts
    options: PlanOptions
    llamacpp: LlamaCppOptions | None = None  # a llama.cpp model: planned for llama.cpp, not vLLM
    folder: Path | None = None  # its local copy
    hub: HubModel | None = None  # read from the Hub


_TARGET = "Target (default: vLLM's CPU build)"
_VLLM = "vLLM settings"
_FIND = "Finding the model"
_PARALLEL = "Parallelism (default: the smallest that fits)"
_CROSSING = "The crossing (with a spec)"


def plan_cli(
    model: Annotated[
        str | None,
        typer.Argument(help="Folder, .gguf, or repo id (local copy, else Hub)."),
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
        str | None, typer.Option(help="Revision of a repo id (or org/name@rev).", rich_help_panel=_FIND)
    ] = None,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Never ask the Hub (local copies only).", rich_help_panel=_FIND),
    ] = False,
    gguf: Annotated[
        str | None, typer.Option(help="The GGUF file of a GGUF-only repo.", rich_help_panel=_FIND)
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
    dtype: Annotated[
        str | None,
        typer.Option(help="vLLM --dtype (CPU: fast one).", metavar="DTYPE", rich_help_panel=_VLLM),
    ] = None,
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
    volume_size: Annotated[
        str | None, typer.Option(help="pack's --volume-size: 4G, 25G, 1T.", rich_help_panel=_CROSSING)
    ] = None,
    parity: Annotated[
        float,
        typer.Option(min=0, max=100, help="pack's --parity, percent.", rich_help_panel=_CROSSING),
    ] = 0.0,
    media_speed: Annotated[
        str | None,
        typer.Option(help="Write speed of the media: 200MB/s.", rich_help_panel=_CROSSING),
    ] = None,
    media: Annotated[
        Path | None,
        typer.Option(help="Measure the write speed of this folder.", rich_help_panel=_CROSSING),
    ] = None,
    base: Annotated[
        Path | None,
        typer.Option(help="inventory.json: count only what it lacks.", rich_help_panel=_CROSSING),
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
        print_catalog(as_json)
        return
    flags = _Flags(
        gpu=gpu, gpus=gpus, gpu_memory=gpu_memory, driver=driver, cpu=cpu or None,
        cpu_kv_space_gib=cpu_kv_space, max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization, quantization=quantization,
        kv_cache_dtype=None if kv_cache_dtype == "auto" else kv_cache_dtype, vllm_version=vllm_version,
        tensor_parallel_size=tensor_parallel_size, pipeline_parallel_size=pipeline_parallel_size,
        max_num_seqs=max_num_seqs, dtype=dtype,
    )  # fmt: skip
    spec = _spec_in_use(config, model)
    find = _find_options(spec, hf_cache=hf_cache, offline=offline, gguf=gguf)
    if model is not None:
        targets = [_model_target(model, spec, flags, find, revision=revision)]
    elif spec is not None:
        targets = _spec_targets(spec, flags, find)
    else:
        raise ConfigError("give a model (folder, .gguf or repo id) or --config airlock.yaml")
    results = [_plan_target(t, flags) for t in targets]
    crossing = None
    if model is None and spec is not None:
        crossing = _crossing(spec, targets, volume_size, parity, media_speed, media, base)
    if as_json:
        print_json(results, single=model is not None, crossing=crossing)
    else:
        for r in results:
            render(r)
        if crossing is not None:
            render_crossing(crossing)
    if any(r.plan.problems for r in results):
        raise typer.Exit(6)


def _plan_target(t: _Target, flags: _Flags) -> Planned:
    """One target planned for its engine: llama.cpp against this host's RAM, else vLLM."""
    from airlock.plan.planner import plan

    if t.llamacpp is None:
        return Planned(t.name, plan(t.facts, t.options), t.hub)
    from airlock.plan.llamacpp import host_ram, plan_llamacpp

    p = plan_llamacpp(t.facts, t.llamacpp, ram_bytes=host_ram())
    given = [f"--{f.name.replace('_', '-')}" for f in fields(flags) if getattr(flags, f.name) is not None]
    if given:
        note = f"{', '.join(given)}: for vLLM models; llama.cpp takes its settings from the spec's engine"
        p = replace(p, notes=(*p.notes, note))
    return Planned(t.name, p, t.hub)


def _spec_in_use(config: Path | None, model: str | None) -> Spec | None:
    """The spec given with --config, else ./airlock.yaml when no model is named and it exists."""
    from airlock.spec import load_spec

    if config:
        return load_spec(config)
    if model is None and Path("airlock.yaml").is_file():
        return load_spec(Path("airlock.yaml"))
    return None


def _find_options(
    spec: Spec | None, *, hf_cache: Path | None, offline: bool, gguf: str | None
) -> FindOptions:
    """Where models are looked for: the HF cache, the spec's store (or the default), then the Hub."""
    import os

    from airlock.plan.find import FindOptions
    from airlock.plan.hub import offline_env
    from airlock.settings import Settings

    settings = Settings.from_env()
    store = spec.store if spec and spec.store else settings.store
    return FindOptions(
        cache=settings.cache,
        store=store,
        hf_cache=hf_cache,
        offline=offline or offline_env(os.environ),
        gguf=gguf,
    )


def _model_target(
    model: str, spec: Spec | None, flags: _Flags, find: FindOptions, *, revision: str | None
) -> _Target:
    """The named model, from a local copy or the Hub, on the spec's hardware when it has one."""
    import os

    from airlock.plan.apply import options_for
    from airlock.plan.find import find_model
    from airlock.spec import VllmEngineSpec

    found = find_model(model, revision, find)
    base = options_for(spec, VllmEngineSpec(kind="vllm"), os.environ) if spec and spec.hardware else None
    return _Target(model, found.facts, _merge(base, flags), folder=found.folder, hub=found.hub)


def _spec_targets(spec: Spec, flags: _Flags, find: FindOptions) -> list[_Target]:
    """The spec's vLLM models (local files, else the Hub for 'hf' ones) and its llama.cpp models."""
    import os

    from airlock.plan.apply import options_for
    from airlock.plan.facts import read_facts
    from airlock.plan.llamacpp import llamacpp_options
    from airlock.spec import LlamaCppEngineSpec, VllmEngineSpec
    from airlock.store.resolve import resolve_gguf

    targets = []
    for m in spec.models:
        if isinstance(m.engine, VllmEngineSpec):
            options = _merge(options_for(spec, m.engine, os.environ), flags)
            targets.append(_vllm_target(m, options, find))
        elif isinstance(m.engine, LlamaCppEngineSpec):
            e = m.engine
            gguf = resolve_gguf(m, find.store)
            targets.append(
                _Target(
                    m.name,
                    read_facts(gguf),
                    _merge(None, _Flags()),
                    llamacpp_options(e.ctx_size, e.parallel, list(e.args)),
                    folder=gguf,
                )
            )
    if not targets:
        raise ConfigError("the spec has no vLLM or llama.cpp model to plan")
    return targets


def _vllm_target(m: ModelSpec, options: PlanOptions, find: FindOptions) -> _Target:
    """A spec's vLLM model: its folder or the store's copy; an 'hf' model not installed, from the Hub."""
    from airlock.errors import ModelNotFoundError
    from airlock.plan.facts import read_facts
    from airlock.plan.find import hub_facts
    from airlock.store.resolve import resolve_model_dir

    try:
        folder = resolve_model_dir(m, find.store)
    except ModelNotFoundError:
        if m.hf is None:
            raise
        hub = hub_facts(m.hf.repo, m.hf.revision, find)
        return _Target(m.name, hub.facts, options, hub=hub)
    return _Target(m.name, read_facts(folder), options, folder=folder)


def _crossing(
    spec: Spec,
    targets: list[_Target],
    volume_size: str | None,
    parity: float,
    media_speed: str | None,
    media: Path | None,
    base: Path | None,
) -> Crossing:
    """What pack would carry for ``spec`` (the planned models, files, images, wheels), on how many
    volumes, copied how fast; with ``base``, only what it lacks."""
    from airlock.common.types import parse_size
    from airlock.plan.crossing import CrossingOptions, crossing, measure_write_speed

    speed, source = None, ""
    if media_speed:
        speed, source = float(_parse_speed(media_speed)), "given"
    elif media is not None:
        speed, source = measure_write_speed(media), f"measured on {media}"
    options = CrossingOptions(
        volume_size=parse_size("--volume-size", volume_size) if volume_size else None, parity_percent=parity,
        media_bytes_per_s=speed, speed_source=source, base=_read_base(base) if base else None,
    )  # fmt: skip
    return crossing(_carried(spec, {t.name: t for t in targets}), options)


def _parse_speed(value: str) -> int:
    """``200MB/s`` (or ``200MB``, ``1.5GiB/s``) as bytes per second."""
    from airlock.common.types import parse_size

    return parse_size("--media-speed", value.strip().removesuffix("/s"), examples="200MB/s, 1GiB/s")


def _read_base(path: Path) -> Base:
    """The other side's holdings from an inventory.json (its signature is pack's to check)."""
    from airlock.bundle.format.inventory import Inventory
    from airlock.plan.crossing import Base

    try:
        inv = Inventory.from_bytes(path.read_bytes(), source=str(path))
    except OSError as exc:
        raise ConfigError(f"--base {path}: cannot be read: {exc.strerror or exc}") from exc
    return Base(
        blobs=frozenset(b.sha256 for b in inv.blobs), models=frozenset((m.repo, m.commit) for m in inv.models)
    )


def _carried(spec: Spec, targets: dict[str, _Target]) -> list[CarriedItem]:
    """Each thing pack would carry: the models (files as their source lists them), files, images, wheels."""
    from airlock.plan.crossing import CarriedItem, folder_files
    from airlock.spec import RemoteEngineSpec

    items = [
        _carried_model(m, targets.get(m.name))
        for m in spec.models
        if not isinstance(m.engine, RemoteEngineSpec)
    ]
    for f in spec.files:
        items.append(
            CarriedItem("files", f.dest or f.path.name, folder_files(f.path) if f.path.exists() else ())
        )
    for image in _images(spec):
        items.append(_carried_image(image))
    if spec.wheels is not None:
        items.append(CarriedItem("wheels", "wheels", known=False, note="pip downloads them at pack time"))
    return items


def _carried_model(m: ModelSpec, t: _Target | None) -> CarriedItem:
    from airlock.plan.crossing import CarriedFile, CarriedItem, folder_files

    if t is not None and t.hub is not None and m.hf is not None:
        names = _filtered([f.path for f in t.hub.files], m.hf.allow, m.hf.ignore)
        files = tuple(CarriedFile(f.path, f.size, f.sha256) for f in t.hub.files if f.path in names)
        return CarriedItem("model", m.name, files, repo=m.hf.repo, commit=t.hub.commit)
    folder = t.folder if t is not None else m.path or m.gguf
    if folder is None or not folder.exists():
        return CarriedItem("model", m.name, known=False, note="not found here")
    return CarriedItem("model", m.name, folder_files(folder))


def _filtered(paths: list[str], allow: list[str], ignore: list[str]) -> set[str]:
    """The paths pack's Hub source takes (its allow and ignore patterns, huggingface_hub's matcher)."""
    from huggingface_hub.utils._paths import filter_repo_objects

    return set(filter_repo_objects(paths, allow_patterns=allow or None, ignore_patterns=ignore or None))


def _images(spec: Spec) -> list[str]:
    """The image references pack carries: the spec's images and each vllm engine's image."""
    from airlock.spec import VllmEngineSpec

    refs = [i.ref for i in spec.images]
    refs += [m.engine.image for m in spec.models if isinstance(m.engine, VllmEngineSpec) and m.engine.image]
    return list(dict.fromkeys(refs))


def _carried_image(ref: str) -> CarriedItem:
    """An image on disk (an OCI or Docker archive, an OCI layout) has a size; one in a registry does not yet."""
    from airlock.plan.crossing import CarriedItem, folder_files

    transport, _, where = ref.partition(":")
    if transport in ("oci-archive", "docker-archive", "oci") and where:
        path = Path(where.split(":", 1)[0] if transport == "oci" else where)
        if path.exists():
            return CarriedItem("image", ref, folder_files(path))
    return CarriedItem("image", ref, known=False, note="size known when pack pulls it")


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
        dtype=_given(flags.dtype, opts.dtype),
    )
    if not (opts.gpu or opts.gpu_memory or opts.cpu):
        opts = replace(opts, cpu=True)
    return opts
