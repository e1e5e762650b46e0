"""Serve's start check (fill unset engine arguments, refuse what cannot start) and the CLI's JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from airlock.cli.plan import plan_cli
from airlock.errors import CannotStartError, ConfigError
from airlock.plan.apply import ArgFlags, apply_plan, args_options
from airlock.spec import VllmEngineSpec, parse_spec

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
          "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
          "max_position_embeddings": 131072, "torch_dtype": "bfloat16"}  # fmt: skip


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "llama-8b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))  # no weights: sizes estimated from the shapes
    return folder


def _spec(model_dir: Path, hardware: dict[str, object] | None, engine: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    data: dict[str, object] = {
        "models": [{"name": "m", "path": str(model_dir), "engine": {"kind": "vllm", **(engine or {})}}]
    }
    if hardware:
        data["hardware"] = hardware
    return parse_spec(data)


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [(frozenset({"avx2", "avx512f", "avx512_bf16"}), "bfloat16"), (frozenset({"avx2", "amx_bf16"}), "bfloat16"),
     (frozenset({"avx2", "avx512f"}), "float32"), (frozenset(), "float32")],
)  # fmt: skip
def test_cpu_without_hardware_never_blocks_and_fills_only_the_cpu_dtype(
    model_dir: Path, flags: frozenset[str], dtype: str
) -> None:
    spec = _spec(model_dir, None)
    new, checks = apply_plan(spec, environ={}, cpu_flags=flags)
    engine = new.models[0].engine
    assert isinstance(engine, VllmEngineSpec) and engine.dtype == dtype
    assert (
        new.models[0].model_copy(update={"engine": engine.model_copy(update={"dtype": None})})
        == spec.models[0]
    )
    assert checks[0].filled == {"dtype": dtype}
    assert checks[0].plan is not None and checks[0].plan.dtype == dtype
    assert ("--dtype", dtype) == checks[0].plan.engine_args[2:4]
    # the spec's own dtype stays, and the plan says when it runs slow here
    own, checks = apply_plan(_spec(model_dir, None, {"dtype": "bfloat16"}), environ={}, cpu_flags=flags)
    assert own.models[0].engine.dtype == "bfloat16" and checks[0].filled == {}  # type: ignore[union-attr]
    slow = [n for n in checks[0].plan.notes if "asked for" in n]  # type: ignore[union-attr]
    assert bool(slow) == (dtype == "float32")
    assert (
        len(checks) == 1
        and not checks[0].blocking
        and checks[0].plan is not None
        and checks[0].plan.informational
    )


def test_gpu_plan_fills_unset_fields(model_dir: Path) -> None:
    spec = _spec(model_dir, {"gpu": "h100-80gb", "count": 2}, {"max_model_len": 32768})
    new, checks = apply_plan(spec, environ={})
    engine = new.models[0].engine
    assert isinstance(engine, VllmEngineSpec)
    assert engine.max_model_len == 32768  # the spec's own value stays
    assert engine.tensor_parallel_size is None and engine.gpu_memory_utilization == 0.92
    assert checks[0].filled == {"gpu_memory_utilization": 0.92}
    assert checks[0].plan is not None and checks[0].plan.engine_args == (
        "--max-model-len", "32768", "--gpu-memory-utilization", "0.92")  # fmt: skip


def test_gpu_plan_fills_tensor_parallel_when_one_gpu_is_not_enough(model_dir: Path) -> None:
    spec = _spec(model_dir, {"gpu": "rtx-4090", "count": 4})
    new, checks = apply_plan(spec, environ={})
    engine = new.models[0].engine
    assert isinstance(engine, VllmEngineSpec)
    assert engine.tensor_parallel_size == 2 and engine.max_model_len is not None
    assert checks[0].plan is not None and "--tensor-parallel-size" in checks[0].plan.engine_args


def test_refuses_what_cannot_start_unless_forced(model_dir: Path) -> None:
    spec = _spec(model_dir, {"gpu": "t4-16gb"}, {"max_model_len": 8192})
    with pytest.raises(CannotStartError, match="cannot start on 1 x NVIDIA T4") as err:
        apply_plan(spec, environ={})
    assert err.value.reasons and err.value.exit_code == 6
    _, checks = apply_plan(spec, force=True, environ={})
    assert checks[0].blocking and checks[0].plan is not None and checks[0].plan.problems


def test_engine_args_feed_the_plan(model_dir: Path) -> None:
    assert args_options(["--kv-cache-dtype=fp8", "--quantization", "awq", "--block-size", "32"]) == ArgFlags(
        kv_cache_dtype="fp8", quantization="awq", block_size=32)  # fmt: skip
    spec = _spec(
        model_dir, {"gpu": "rtx-4090-24gb"}, {"max_model_len": 8192, "args": ["--kv-cache-dtype", "fp8"]}
    )
    _, checks = apply_plan(spec, environ={})
    assert checks[0].plan is not None and checks[0].plan.layout.bytes_per_token == 32 * 8 * 256


def test_spec_hardware_validation() -> None:
    from airlock.errors import SpecError

    with pytest.raises(SpecError, match="exactly one of 'gpu' or 'gpu_memory'"):
        parse_spec({"hardware": {"count": 2}})
    with pytest.raises(SpecError, match="driver"):
        parse_spec({"hardware": {"gpu": "h100", "driver": "new"}})


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(plan_cli)
    return app


def test_cli_json(model_dir: Path) -> None:
    result = CliRunner().invoke(
        _cli(), [str(model_dir), "--gpu", "h100-80gb:2", "--max-model-len", "32768", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["kv_cache"]["bytes_per_token_per_gpu"] == 131072
    assert data["fits"] and data["engine_args"][:2] == ["--max-model-len", "32768"]
    assert [t["size"] for t in data["tensor_parallel"] if t["ok"]] == [1, 2]


def test_cli_table_and_exit_code_when_it_does_not_fit(model_dir: Path) -> None:
    result = CliRunner().invoke(
        _cli(), [str(model_dir), "--gpu", "t4", "--max-model-len", "8192"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 6
    assert "does not fit" in result.output and "would fit" in result.output


def test_cli_gpu_flag_with_a_spec_that_also_has_a_gguf_model(model_dir: Path, tmp_path: Path) -> None:
    """--gpu targets the spec's vLLM models; its llama.cpp (GGUF) model is planned for llama.cpp."""
    import yaml

    from airlock.serving.default_model import locate_default_model
    from airlock.settings import Settings

    gguf = locate_default_model(Settings.from_env({"HOME": str(tmp_path)}))
    spec = tmp_path / "airlock.yaml"
    spec.write_text(yaml.safe_dump({"models": [
        {"name": "big", "path": str(model_dir), "engine": {"kind": "vllm"}},
        {"name": "small", "gguf": str(gguf), "engine": {"kind": "llamacpp"}},
    ]}))  # fmt: skip
    result = CliRunner().invoke(_cli(), ["--config", str(spec), "--gpu", "h100-80gb:2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    plans = {p["name"]: p for p in data["models"]}
    assert [(i["kind"], i["name"], i["files"]) for i in data["crossing"]["items"]] == [
        ("model", "big", 1),
        ("model", "small", 1),
    ]
    assert plans["big"]["hardware"]["catalog_key"] == "h100-80gb" and plans["big"]["hardware"]["count"] == 2
    small = plans["small"]
    assert small["engine"] == "llama.cpp" and "engine_args" not in small and "hardware" not in small
    assert any("--gpu" in n and "llama.cpp" in n for n in small["notes"])


def test_cli_contradictory_flags(model_dir: Path) -> None:
    result = CliRunner().invoke(_cli(), [str(model_dir), "--gpu", "h100", "--gpu-memory", "80GiB"])
    assert isinstance(result.exception, ConfigError) and "not both" in str(result.exception)
    result = CliRunner().invoke(_cli(), [str(model_dir), "--gpu", "h100:2", "--gpus", "4"])
    assert isinstance(result.exception, ConfigError)


def test_serve_refuses_before_starting_anything(model_dir: Path, tmp_path: Path) -> None:
    import asyncio

    from airlock.serving.stack import ServeOptions, serve
    from airlock.settings import Settings

    spec = _spec(model_dir, {"gpu": "t4-16gb"}, {"max_model_len": 8192})
    settings = Settings.from_env(
        {"AIRLOCK_HOME": str(tmp_path / "home"), "AIRLOCK_CACHE": str(tmp_path / "cache")}
    )
    with pytest.raises(CannotStartError, match="cannot start"):
        asyncio.run(serve(ServeOptions(spec=spec, port=0), settings))
    assert not (tmp_path / "home" / "logs").exists()  # no engine was launched


def test_an_hf_model_is_planned_from_the_store_the_engine_uses(tmp_path: Path) -> None:
    # A spec without 'store:' serves 'hf' models from the default store; the start check looks there too,
    # so a model that cannot start is refused rather than skipped.
    from airlock.store.place import make_snapshot, write_ref

    store = tmp_path / "store"
    repo_dir = store / "hub" / "models--org--llama-8b"
    (repo_dir / "blobs").mkdir(parents=True)
    data = json.dumps(CONFIG).encode()
    sha = hashlib.sha256(data).hexdigest()
    (repo_dir / "blobs" / sha).write_bytes(data)
    make_snapshot(repo_dir, "c" * 40, {"config.json": sha})
    write_ref(repo_dir, "main", "c" * 40)
    spec = parse_spec(
        {"models": [{"name": "m", "hf": {"repo": "org/llama-8b"}, "engine": {"kind": "vllm"}}],
         "hardware": {"gpu_memory": "8GiB"}}
    )  # fmt: skip
    assert apply_plan(spec, environ={}).checks == ()  # no store to look in: not planned, as before
    with pytest.raises(CannotStartError, match=r"model .m. cannot start on 1 x .*no memory left"):
        apply_plan(spec, store=store, environ={})
