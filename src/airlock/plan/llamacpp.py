"""The plan for a llama.cpp (GGUF) model: what ``llama-server`` allocates for its context, against the host's RAM.

llama.cpp maps the GGUF file (the weights: the file's size) and allocates one KV cache for its whole
context (``--ctx-size``, shared by the ``--parallel`` slots)::

    KV bytes = attention layers x ctx x kv heads x (key dim + value dim) x bytes per element of the cache type

with the cache types of ``--cache-type-k`` / ``--cache-type-v`` (f16 unless given). Nothing of vLLM
applies: no GPU, no tensor parallelism, no vLLM flags.

Example::

    p = plan_llamacpp(read_facts(Path("m.gguf")), LlamaCppOptions(ctx_size=8192), ram_bytes=host_ram())
    p.kv_bytes, p.fits
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from airlock.errors import ConfigError
from airlock.formats.gguf import ggml_types
from airlock.plan.argv import given_flags
from airlock.plan.facts import ModelFacts
from airlock.plan.hardware import GIB

# llama.cpp's KV cache types: bytes per block of elements (ggml's type sizes).
#: The KV cache types llama-server accepts (--cache-type-k/-v); their sizes come from ggml's table.
_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
_ATTENTION = ("full", "sliding", "chunked")
_FLAGS = {"-c": "ctx_size", "--ctx-size": "ctx_size", "-np": "parallel", "--parallel": "parallel",
          "-ctk": "cache_type_k", "--cache-type-k": "cache_type_k",
          "-ctv": "cache_type_v", "--cache-type-v": "cache_type_v"}  # fmt: skip


@dataclass(frozen=True)
class LlamaCppOptions:
    """What the spec's llamacpp engine gives llama-server (``ctx_size`` 0: the model's training context)."""

    ctx_size: int = 8192
    parallel: int = 4
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"


@dataclass(frozen=True)
class LlamaCppPlan:
    facts: ModelFacts
    options: LlamaCppOptions
    ctx_size: int  # the context llama.cpp allocates (ctx_size 0 resolved to the model's)
    file_bytes: int  # the GGUF file, mapped whole
    kv_bytes: int
    kv_layers: int  # the layers with a KV cache (attention layers)
    ram_bytes: int  # the host's memory the plan is measured against
    fits: bool
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    args: tuple[str, ...]  # llama-server's context arguments as serve passes them

    @property
    def total_bytes(self) -> int:
        return self.file_bytes + self.kv_bytes

    @property
    def tokens_per_slot(self) -> int:
        return self.ctx_size // max(1, self.options.parallel)


def llamacpp_options(ctx_size: int, parallel: int, args: list[str]) -> LlamaCppOptions:
    """The engine's fields, then what its ``args`` give (they come last on llama-server's command line, so they win)."""
    found = given_flags(args, _FLAGS)
    return LlamaCppOptions(
        ctx_size=_whole(found.get("ctx_size"), ctx_size),
        parallel=_whole(found.get("parallel"), parallel),
        cache_type_k=found.get("cache_type_k", "f16").lower(),
        cache_type_v=found.get("cache_type_v", "f16").lower(),
    )


def _whole(value: str | None, default: int) -> int:
    return int(value) if value is not None and value.isdigit() else default


def host_ram() -> int:
    """This machine's physical memory in bytes (0 when the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _bytes_per_element(cache_type: str) -> float:
    if cache_type not in _CACHE_TYPES:
        raise ConfigError(
            f"llama.cpp cache type {cache_type!r} is not one llama.cpp knows",
            hint="one of " + ", ".join(_CACHE_TYPES),
        )
    sizes = {name.lower(): (block, size) for name, block, size in ggml_types().values()}
    block, size = sizes[cache_type]
    return size / block


def plan_llamacpp(facts: ModelFacts, options: LlamaCppOptions, *, ram_bytes: int) -> LlamaCppPlan:
    """The context, KV cache and weights llama.cpp allocates for ``facts`` (a GGUF model), against ``ram_bytes``."""
    trained = facts.max_model_len
    ctx = options.ctx_size or trained
    layers = sum(1 for k in facts.layer_kinds if k in _ATTENTION) or facts.num_layers
    k_bytes = _bytes_per_element(options.cache_type_k)
    v_bytes = _bytes_per_element(options.cache_type_v)
    kv = int(layers * ctx * facts.num_kv_heads * (facts.head_dim * k_bytes + facts.v_head_dim * v_bytes))
    try:
        file_bytes = facts.source.stat().st_size
    except OSError:
        file_bytes = facts.weight_bytes
    notes = [f"a llama.cpp plan (llama-server on the CPU); {options.parallel} slots share the context"]
    if ctx > trained:
        notes.append(
            f"ctx_size {ctx:,} is beyond the model's training context ({trained:,}): llama.cpp runs, "
            "but outputs past it may be wrong"
        )
    if facts.sliding_window or "sliding" in facts.layer_kinds or facts.mla is not None:
        notes.append("sliding-window or latent attention: llama.cpp may allocate less KV cache than this")
    notes.append("llama.cpp's compute buffers (a few hundred MiB) come on top")
    problems: list[str] = []
    total = file_bytes + kv
    if ram_bytes and total > ram_bytes:
        per_token = kv / ctx if ctx else 0
        room = int((ram_bytes - file_bytes) / per_token) // 256 * 256 if per_token else 0
        fix = (
            f"give ctx_size {room} or less"
            if room >= 256
            else "the weights alone leave no room: a smaller quantization"
        )
        problems.append(
            f"weights {file_bytes / GIB:.2f} GiB + KV cache {kv / GIB:.2f} GiB for {ctx:,} tokens exceed "
            f"this host's {ram_bytes / GIB:.2f} GiB of RAM: {fix}"
        )
    if not ram_bytes:
        notes.append("this host's RAM is unknown: nothing is checked against it")
    args: tuple[str, ...] = ("--ctx-size", str(options.ctx_size), "--parallel", str(options.parallel))
    if options.cache_type_k != "f16":
        args += ("--cache-type-k", options.cache_type_k)
    if options.cache_type_v != "f16":
        args += ("--cache-type-v", options.cache_type_v)
    return LlamaCppPlan(
        facts=facts, options=options, ctx_size=ctx, file_bytes=file_bytes, kv_bytes=kv, kv_layers=layers,
        ram_bytes=ram_bytes, fits=not problems, problems=tuple(problems), notes=tuple(notes), args=args,
    )  # fmt: skip
