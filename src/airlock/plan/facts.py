"""Model facts for planning: shapes from config.json, exact sizes from safetensors headers or GGUF.

Only what memory and parallelism depend on is kept, in one frozen record. Multimodal configs keep
the language model's shape in ``text_config`` (or ``llm_config``); the architecture name comes from
the top level, because that is what vLLM's registry is keyed on.

Example::

    facts = read_facts(Path("models/Llama-3.1-8B-Instruct"))
    facts.num_kv_heads, facts.head_dim, facts.weight_bytes    # (8, 128, 16060522496)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from airlock.errors import ModelFactsError
from airlock.formats.gguf import GgufFile, read_gguf
from airlock.formats.safetensors import SafetensorsHeader, read_header
from airlock.plan.facts_layers import layer_kinds, mamba_state_bytes

DTYPE_NAMES = {
    "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "half": "float16",
    "float32": "float32", "fp32": "float32", "float": "float32",
}  # fmt: skip
DTYPE_SIZE = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class QuantFacts:
    method: str  # as vLLM names it: fp8, awq, gptq, compressed-tensors, bitsandbytes, gguf, mxfp4, ...
    bits: int | None = None
    group_size: int | None = None
    weight_block: tuple[int, int] | None = None  # fp8 block quantization, e.g. (128, 128)
    activation_fp8: bool = False


@dataclass(frozen=True)
class MlaFacts:
    kv_lora_rank: int
    qk_rope_head_dim: int


@dataclass(frozen=True)
class ModelFacts:
    source: Path
    format: str  # "safetensors" | "gguf"
    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    v_head_dim: int
    intermediate_size: int
    vocab_size: int
    max_model_len: int  # what vLLM derives from the config when --max-model-len is not given
    dtype: str  # the checkpoint's compute dtype (bfloat16, float16, float32)
    weight_bytes: int  # exact, from the headers (every file, vision tower included)
    param_count: int
    embedding_bytes: int  # input embedding (first pipeline stage)
    lm_head_bytes: int  # output projection (last stage; 0 when tied)
    layer_kinds: tuple[str, ...]  # per layer: full, sliding, chunked, mamba, none
    sliding_window: int | None = None
    attention_chunk: int | None = None
    mamba_state_bytes: int = 0  # per layer per sequence (hybrid models)
    mla: MlaFacts | None = None
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    rotary_dim: int = 0
    quant: QuantFacts | None = None
    multimodal: bool = False
    tied_embeddings: bool = False
    generation: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    model_max_length: int | None = None  # the config's own key: vLLM lets --max-model-len go up to it

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_SIZE.get(self.dtype, 2)


def read_facts(path: Path) -> ModelFacts:
    """Facts for a Hugging Face-format folder or a single GGUF file."""
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelFactsError(f"{path}: give a model folder (config.json + safetensors) or a .gguf file")
        return facts_from_gguf(read_gguf(path))
    if not path.is_dir():
        raise ModelFactsError(f"{path}: no such model folder or file")
    config = _load_json(path / "config.json", required=True)
    gen = _load_json(path / "generation_config.json", required=False)
    sizes = _weights(path)
    return from_config(config, path=path, generation=gen, sizes=sizes)


def _load_json(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        if not required:
            return {}
        raise ModelFactsError(f"{path}: missing; a Hugging Face model folder needs its config.json") from exc
    except OSError as exc:
        raise ModelFactsError(f"{path}: not readable JSON: {exc}") from exc
    return json_object(raw, path)


def json_object(raw: bytes, where: Path) -> dict[str, Any]:
    """A JSON file's top-level object (config.json, an index), every defect named by ``where``."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFactsError(f"{where}: not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFactsError(f"{where}: the top level must be a JSON object")
    return data


@dataclass(frozen=True)
class WeightSizes:
    total_bytes: int
    params: int
    embedding_bytes: int
    lm_head_bytes: int


SAFETENSORS_INDEX = "model.safetensors.index.json"


def index_shards(index: dict[str, Any], where: Path) -> list[str]:
    """The shard names a safetensors index's weight_map lists, sorted and without repeats."""
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelFactsError(f"{where}: has no weight_map")
    return sorted({str(v) for v in weight_map.values()})


def _weights(folder: Path) -> WeightSizes | None:
    """Sizes from every safetensors header (through the index when there is one); None if none."""
    index = folder / SAFETENSORS_INDEX
    if index.exists():
        names = index_shards(_load_json(index, required=True), index)
        files = []
        for name in names:
            p = (folder / name).resolve()
            if folder.resolve() not in p.parents:
                raise ModelFactsError(f"{index}: shard {name!r} lies outside the model folder")
            if not p.exists():
                raise ModelFactsError(f"{index}: lists {name}, which is missing from {folder}")
            files.append(p)
    else:
        files = sorted(folder.glob("*.safetensors"))
    return weight_sizes(read_header(f) for f in files)


def weight_sizes(headers: Iterable[SafetensorsHeader]) -> WeightSizes | None:
    """Sizes summed over every shard's header; None when there is no shard."""
    total = params = embed = head = shards = 0
    for header in headers:
        shards += 1
        for name, t in header.tensors.items():
            total += t.nbytes
            params += _params(t.dtype, t.numel, name)
            if name.endswith(("embed_tokens.weight", "wte.weight", "word_embeddings.weight")):
                embed += t.nbytes
            elif name.endswith("lm_head.weight") or name == "output.weight":
                head += t.nbytes
    return WeightSizes(total, params, embed, head) if shards else None


def _params(dtype: str, numel: int, name: str) -> int:
    if name.endswith(("_scale", "scale_inv", ".scales", "qzeros", "g_idx", "_zero_point", "weight_scale_2")):
        return 0
    if dtype in ("I32", "U32") and name.endswith(("qweight", "weight_packed")):
        return numel * 8  # eight 4-bit values per int32
    if (dtype == "U8" and name.endswith(("weight_packed", "blocks"))) or dtype == "F4":
        return numel * 2
    return numel


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    for key in ("text_config", "llm_config", "language_config", "thinker_config"):
        sub = config.get(key)
        if isinstance(sub, dict):
            if key == "thinker_config" and isinstance(sub.get("text_config"), dict):
                return dict(sub["text_config"])
            return sub
    return config


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        v = cfg.get(k)
        if v is not None:
            return v
    return None


def _need_int(cfg: dict[str, Any], where: Path, *keys: str) -> int:
    v = _first(cfg, *keys)
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ModelFactsError(
            f"{where / 'config.json'}: field {keys[0]!r} is missing or not a positive integer",
            hint="the plan needs the model's shape: layers, hidden size, attention heads, vocabulary",
        )
    return v


@dataclass(frozen=True)
class _Shape:
    """The language model's shape as config.json gives it, MLA already folded into the head sizes."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    v_head_dim: int
    intermediate: int
    vocab: int
    experts: int
    moe_intermediate: int
    tied: bool
    mla: MlaFacts | None = None


def from_config(
    config: dict[str, Any],
    *,
    path: Path,
    generation: dict[str, Any] | None = None,
    sizes: WeightSizes | None = None,
) -> ModelFacts:
    """Facts from an already-loaded config.json (tests build fixtures from published numbers).

    In stages: the architecture, the text model's shape, its dtype, layer kinds and quantization,
    then the weight sizes (the headers' when given, else estimated from the shape)."""
    architecture = _architecture(config, path)
    text = _text_config(config)
    shape = _shape(config, text, path)
    dtype = _checkpoint_dtype(config, text)
    dtype_bytes = DTYPE_SIZE.get(dtype, 2)
    layers = layer_kinds(text, shape.layers)
    quant = _quant(config, text)
    notes: list[str] = []
    if sizes is None:
        sizes = _estimated_sizes(shape, quant, dtype_bytes)
        notes.append("no safetensors files: weight size estimated from config.json shapes")
    return ModelFacts(
        source=path,
        format="safetensors",
        architecture=architecture,
        model_type=str(config.get("model_type") or text.get("model_type") or ""),
        num_layers=shape.layers,
        hidden_size=shape.hidden,
        num_heads=shape.heads,
        num_kv_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        v_head_dim=shape.v_head_dim,
        intermediate_size=shape.intermediate,
        vocab_size=shape.vocab,
        max_model_len=_derived_max_len(text, path),
        model_max_length=m if isinstance(m := text.get("model_max_length"), int) and m > 0 else None,
        dtype=dtype,
        weight_bytes=sizes.total_bytes,
        param_count=sizes.params,
        embedding_bytes=sizes.embedding_bytes,
        lm_head_bytes=sizes.lm_head_bytes,
        layer_kinds=layers.kinds,
        sliding_window=layers.sliding_window,
        attention_chunk=layers.attention_chunk,
        mamba_state_bytes=mamba_state_bytes(text, dtype_bytes) if "mamba" in layers.kinds else 0,
        mla=shape.mla,
        num_experts=shape.experts,
        experts_per_token=int(_first(text, "num_experts_per_tok", "moe_topk", "num_experts_per_token") or 0),
        moe_intermediate_size=shape.moe_intermediate,
        rotary_dim=_rotary_dim(text, shape),
        quant=quant,
        multimodal=text is not config or "vision_config" in config,
        tied_embeddings=shape.tied,
        generation=dict(generation or {}),
        notes=tuple(notes),
    )


def _architecture(config: dict[str, Any], path: Path) -> str:
    """The first of ``architectures``: the name vLLM's registry picks the model class by."""
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise ModelFactsError(
            f"{path / 'config.json'}: field 'architectures' is missing",
            hint="vLLM picks its model class from it, e.g. ['LlamaForCausalLM']",
        )
    return archs[0]


def _shape(config: dict[str, Any], text: dict[str, Any], path: Path) -> _Shape:
    """Layers, widths, heads and experts under the many names configs give them."""
    layers = _need_int(text, path, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    hidden = _need_int(text, path, "hidden_size", "n_embd", "d_model")
    heads = _need_int(text, path, "num_attention_heads", "n_head", "num_heads")
    kv = _first(text, "num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num")
    if kv is None:
        kv = 1 if text.get("multi_query") else heads
    head_dim = _first(text, "head_dim", "kv_channels") or hidden // heads
    vocab = _need_int(text, path, "vocab_size", "padded_vocab_size")
    intermediate = _first(text, "intermediate_size", "ffn_hidden_size", "n_inner") or 4 * hidden
    experts = _first(text, "num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts") or 0
    moe_inter = _first(text, "moe_intermediate_size", "expert_intermediate_size") or (
        intermediate if experts else 0
    )
    tied = bool(
        _first(text, "tie_word_embeddings")
        if "tie_word_embeddings" in text
        else config.get("tie_word_embeddings", False)
    )
    shape = _Shape(
        layers=layers, hidden=hidden, heads=heads, kv_heads=int(kv), head_dim=int(head_dim),
        v_head_dim=int(head_dim), intermediate=int(intermediate), vocab=vocab, experts=int(experts),
        moe_intermediate=int(moe_inter), tied=tied,
    )  # fmt: skip
    return _with_mla(shape, text)


def _with_mla(shape: _Shape, text: dict[str, Any]) -> _Shape:
    """Multi-head latent attention (DeepSeek): vLLM caches one latent plus the rope part per token,
    and every attention head counts as a kv head."""
    rank = text.get("kv_lora_rank")
    if not isinstance(rank, int) or rank <= 0:
        return shape
    rope = text.get("qk_rope_head_dim") or 64
    return replace(
        shape,
        mla=MlaFacts(kv_lora_rank=rank, qk_rope_head_dim=rope),
        head_dim=int((text.get("qk_nope_head_dim") or 128) + rope),
        v_head_dim=int(text.get("v_head_dim") or 128),
        kv_heads=shape.heads,
    )


def _checkpoint_dtype(config: dict[str, Any], text: dict[str, Any]) -> str:
    """The checkpoint's compute dtype, text config first; bfloat16 when neither says."""
    raw = str(_first(text, "torch_dtype", "dtype") or _first(config, "torch_dtype", "dtype") or "bfloat16")
    return DTYPE_NAMES.get(raw.lower().removeprefix("torch."), "bfloat16")


def _rotary_dim(text: dict[str, Any], shape: _Shape) -> int:
    """Rotary dimensions per head: the partial rotary factor's share, or MLA's rope part."""
    if shape.mla is not None:
        return shape.mla.qk_rope_head_dim
    return int(shape.head_dim * float(text.get("partial_rotary_factor") or 1.0))


def _estimated_sizes(shape: _Shape, quant: QuantFacts | None, dtype_bytes: int) -> WeightSizes:
    """Weight sizes from the shape alone, for a folder without safetensors files."""
    estimate = _estimate_params(shape)
    # Quantized checkpoints store their linear weights in fewer bytes (embeddings stay in dtype).
    per_param = (quant.bits or 8) / 8 if quant is not None and quant.method != "bitsandbytes" else dtype_bytes
    copies = 1 if shape.tied else 2
    embed_bytes = shape.vocab * shape.hidden * dtype_bytes
    body = int((estimate - shape.vocab * shape.hidden * copies) * per_param)
    return WeightSizes(body + embed_bytes * copies, estimate, embed_bytes, 0 if shape.tied else embed_bytes)


def _estimate_params(s: _Shape) -> int:
    """Attention, MLP (all experts) and norms per layer, plus the embedding and an untied head."""
    attn = s.hidden * s.head_dim * (s.heads * 2 + s.kv_heads * 2)
    mlp = 3 * s.hidden * (s.moe_intermediate * s.experts if s.experts else s.intermediate)
    return s.layers * (attn + mlp + 2 * s.hidden) + s.vocab * s.hidden * (1 if s.tied else 2)


def _derived_max_len(text: dict[str, Any], path: Path) -> int:
    """vLLM's derivation: the smallest of the length keys, stretched by rope scaling (except llama3/longrope)."""
    keys = (
        "max_position_embeddings",
        "n_positions",
        "max_seq_len",
        "seq_length",
        "max_sequence_length",
        "model_max_length",
    )
    found = [v for k in keys if isinstance(v := text.get(k), int) and v > 0]
    if not found:
        raise ModelFactsError(
            f"{path / 'config.json'}: no max_position_embeddings (or n_positions, max_seq_len)",
            hint="give --max-model-len",
        )
    length = min(found)
    scaling = text.get("rope_scaling") or text.get("rope_parameters")
    if isinstance(scaling, dict):
        rope_type = scaling.get("rope_type") or scaling.get("type")
        factor = scaling.get("factor")
        if rope_type not in (None, "su", "longrope", "llama3", "default", "mrope") and isinstance(
            factor, int | float
        ):
            if rope_type == "yarn" and isinstance(scaling.get("original_max_position_embeddings"), int):
                length = scaling["original_max_position_embeddings"]
            length = int(length * factor)
    return length


def _quant(config: dict[str, Any], text: dict[str, Any]) -> QuantFacts | None:
    q = (
        config.get("quantization_config")
        or text.get("quantization_config")
        or config.get("compression_config")
    )
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method") or q.get("quant_algo") or "unknown").lower()
    if method == "modelopt" and str(q.get("quant_algo", "")).upper() == "NVFP4":
        method = "modelopt_fp4"
    block = q.get("weight_block_size")
    group = q.get("group_size") or q.get("q_group_size")
    bits = q.get("bits") or q.get("w_bit")
    act_fp8 = method == "fp8" and q.get("activation_scheme") is not None
    if method == "compressed-tensors":
        for grp in (q.get("config_groups") or {}).values():
            w = grp.get("weights") or {}
            bits = bits or w.get("num_bits")
            group = group or w.get("group_size")
            if isinstance(w.get("block_structure"), list):
                block = w["block_structure"]
            act = grp.get("input_activations") or {}
            act_fp8 = act_fp8 or (act.get("type") == "float" and act.get("num_bits") == 8)
    if method == "bitsandbytes":
        bits = 4 if q.get("load_in_4bit") else 8
    return QuantFacts(
        method=method,
        bits=int(bits) if isinstance(bits, int) else None,
        group_size=int(group) if isinstance(group, int) and group > 0 else None,
        weight_block=(int(block[0]), int(block[1])) if isinstance(block, list) and len(block) == 2 else None,
        activation_fp8=act_fp8,
    )


# llama.cpp's built-in sliding-window patterns (llama-model.cpp ``set_swa_pattern``) where GGUF metadata
# does not say: Gemma 2 alternates (layer_kinds knows it by name), Gemma 3 keeps every 6th layer global.
_GGUF_SWA_PATTERN = {"gemma3": 6}

# GGUF architecture names -> the Hugging Face architecture vLLM's registry knows.
_GGUF_ARCH = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM", "qwen2moe": "Qwen2MoeForCausalLM", "qwen3moe": "Qwen3MoeForCausalLM",
    "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM", "deepseek2": "DeepseekV3ForCausalLM", "falcon": "FalconForCausalLM",
    "starcoder2": "Starcoder2ForCausalLM", "gpt2": "GPT2LMHeadModel", "stablelm": "StableLmForCausalLM",
    "command-r": "CohereForCausalLM", "olmo2": "Olmo2ForCausalLM", "gpt-oss": "GptOssForCausalLM",
}  # fmt: skip


def facts_from_gguf(g: GgufFile) -> ModelFacts:
    """Facts from a GGUF file's header and tensor table (sizes exact, shape from its metadata)."""
    arch = g.architecture

    def need(key: str) -> int:
        v = g.arch_int(key)
        if v is None or v <= 0:
            raise ModelFactsError(f"{g.path}: GGUF metadata has no {arch}.{key}")
        return v

    layers, hidden, heads = need("block_count"), need("embedding_length"), need("attention.head_count")
    kv = g.arch_int("attention.head_count_kv") or heads
    head_dim = g.arch_int("attention.key_length") or hidden // heads
    tokens = g.metadata.get("tokenizer.ggml.tokens")
    vocab = g.arch_int("vocab_size") or (len(tokens) if isinstance(tokens, list) else 0)
    if vocab <= 0:
        raise ModelFactsError(f"{g.path}: GGUF metadata gives no vocabulary size")
    window = g.arch_int("attention.sliding_window")
    kv_lora = g.arch_int("attention.kv_lora_rank")
    mla = MlaFacts(kv_lora, g.arch_int("rope.dimension_count") or 64) if kv_lora else None
    total = sum(t.nbytes for t in g.tensors)
    params = sum(math.prod(t.shape) for t in g.tensors)
    embed = sum(t.nbytes for t in g.tensors if t.name == "token_embd.weight")
    head = sum(t.nbytes for t in g.tensors if t.name == "output.weight")
    # The same rules as config.json's, with the pattern llama.cpp builds in for Gemma 3 (every 6th layer global).
    pattern = g.arch_int("attention.sliding_window_pattern") or _GGUF_SWA_PATTERN.get(arch)
    kinds = layer_kinds(
        {"model_type": arch, "sliding_window": window, "sliding_window_pattern": pattern}, layers
    )
    ftype = g.metadata.get("general.file_type")
    return ModelFacts(
        source=g.path,
        format="gguf",
        architecture=_GGUF_ARCH.get(arch, arch),
        model_type=arch,
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        v_head_dim=g.arch_int("attention.value_length") or head_dim,
        intermediate_size=g.arch_int("feed_forward_length") or 4 * hidden,
        vocab_size=vocab,
        max_model_len=need("context_length"),
        dtype="float16",  # llama.cpp and vLLM's GGUF loader compute and cache in fp16
        weight_bytes=total,
        param_count=params,
        embedding_bytes=embed,
        lm_head_bytes=head,
        layer_kinds=kinds.kinds,
        sliding_window=kinds.sliding_window,
        mla=mla,
        num_experts=g.arch_int("expert_count") or 0,
        experts_per_token=g.arch_int("expert_used_count") or 0,
        moe_intermediate_size=g.arch_int("expert_feed_forward_length") or 0,
        rotary_dim=g.arch_int("rope.dimension_count") or head_dim,
        quant=QuantFacts(method="gguf", bits=None, group_size=None),
        tied_embeddings=head == 0,
        generation={},
        notes=(f"GGUF file type {ftype}; sizes from the GGUF tensor table",),
    )
