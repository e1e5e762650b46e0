"""``airlock plan`` as a newcomer meets it (issue 16): the store is looked in, no flag is ignored silently,
a length vLLM refuses is not called "fits", a llama.cpp model is planned for llama.cpp, the CPU's table
says CPU, user text is printed as typed, and the help reads whole at 80 columns."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from airlock.cli.plan import plan_cli
from airlock.errors import CannotStartError, ConfigError, ModelNotFoundError
from airlock.plan.apply import apply_plan
from airlock.plan.facts import from_config, read_facts
from airlock.plan.llamacpp import LlamaCppOptions, llamacpp_options, plan_llamacpp
from airlock.plan.locate import locate_model
from airlock.plan.planner import PlanOptions, plan
from airlock.spec import parse_spec

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
          "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
          "max_position_embeddings": 8192, "torch_dtype": "bfloat16"}  # fmt: skip


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(plan_cli)
    return app


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "llama-8b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder


def _install(store: Path, repo: str, config: dict[str, object]) -> Path:
    """A model placed in ``store`` as ``airlock install`` places it (blobs, a snapshot, refs/main)."""
    from airlock.store.layout import repo_folder
    from airlock.store.place import make_snapshot, write_ref

    repo_dir = store / "hub" / repo_folder(repo)
    (repo_dir / "blobs").mkdir(parents=True)
    data = json.dumps(config).encode()
    sha = hashlib.sha256(data).hexdigest()
    (repo_dir / "blobs" / sha).write_bytes(data)
    make_snapshot(repo_dir, "c" * 40, {"config.json": sha})
    write_ref(repo_dir, "main", "c" * 40)
    return repo_dir / "snapshots" / ("c" * 40)


# 1. the store ------------------------------------------------------------------------------------


def test_a_model_installed_into_the_store_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    store = tmp_path / "store"
    local = _install(store, "local/mine", CONFIG)
    hub = _install(store, "acme/llama-8b", CONFIG)
    assert locate_model("local/mine", store=store) == local
    assert locate_model("mine", store=store) == local  # a spec's model name: the store's local/<name>
    assert locate_model("acme/llama-8b", store=store) == hub
    with pytest.raises(ModelNotFoundError, match="nor in airlock's store at") as err:
        locate_model("acme/other", store=store)
    assert "airlock install" in (err.value.hint or "")


def test_cli_plans_a_model_from_the_default_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _install(home / "store", "local/mine", CONFIG)
    env = {"AIRLOCK_HOME": str(home), "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HOME": str(tmp_path / "e")}
    result = CliRunner().invoke(_cli(), ["local/mine", "--gpu", "h100-80gb", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["model"]["source"].startswith(str(home / "store"))


# 2. --gpus alone -----------------------------------------------------------------------------------


def test_gpus_without_a_gpu_is_an_error(model_dir: Path) -> None:
    result = CliRunner().invoke(_cli(), [str(model_dir), "--gpus", "2"])
    assert isinstance(result.exception, ConfigError)
    assert "add --gpu" in str(result.exception) and "--gpu-memory" in str(result.exception)
    ok = CliRunner().invoke(_cli(), [str(model_dir), "--gpu-memory", "80GiB", "--gpus", "2", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["hardware"]["count"] == 2


# 3. a length beyond the model's ------------------------------------------------------------------


def test_a_length_beyond_the_model_does_not_start(model_dir: Path) -> None:
    facts = read_facts(model_dir)
    p = plan(facts, PlanOptions(gpu="h100-80gb", max_model_len=20000))
    assert not p.fits and p.problems
    assert "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1" in p.problems[0] and "--max-model-len 8192" in p.problems[0]
    allowed = plan(facts, PlanOptions(gpu="h100-80gb", max_model_len=20000, allow_long_max_model_len=True))
    assert allowed.fits and any("VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 is set" in n for n in allowed.notes)
    # vLLM lets a length go up to the config's own model_max_length
    longer = from_config({**CONFIG, "model_max_length": 32768}, path=model_dir)
    assert plan(longer, PlanOptions(gpu="h100-80gb", max_model_len=20000)).fits


def test_cli_and_serve_refuse_a_length_beyond_the_model(model_dir: Path) -> None:
    result = CliRunner().invoke(
        _cli(), [str(model_dir), "--gpu", "h100-80gb", "--max-model-len", "20000"], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 6
    assert "does not fit" in result.output and "fits " not in result.output.replace("does not fit", "")
    allowed = CliRunner().invoke(
        _cli(), [str(model_dir), "--gpu", "h100-80gb", "--max-model-len", "20000", "--json"],
        env={"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"},
    )  # fmt: skip
    assert allowed.exit_code == 0 and json.loads(allowed.output)["fits"]
    spec = {"models": [{"name": "m", "path": str(model_dir), "engine": {"kind": "vllm", "max_model_len": 20000}}],
            "hardware": {"gpu": "h100-80gb"}}  # fmt: skip
    with pytest.raises(CannotStartError, match="VLLM_ALLOW_LONG_MAX_MODEL_LEN"):
        apply_plan(parse_spec(spec), environ={})
    spec["models"][0]["engine"]["env"] = {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}  # type: ignore[index]
    assert apply_plan(parse_spec(spec), environ={}).checks[0].plan.fits  # type: ignore[union-attr]
    spec["models"][0]["engine"]["env"] = {}  # type: ignore[index]
    on_the_cpu = parse_spec({"models": spec["models"]})  # no hardware: serve reports it, vLLM refuses it
    assert "CANNOT START: max_model_len 20,000" in apply_plan(on_the_cpu, environ={}).checks[0].message


# 4. llama.cpp models ---------------------------------------------------------------------------------


def _gguf(tmp_path: Path) -> Path:
    from airlock.serving.default_model import locate_default_model
    from airlock.settings import Settings

    return locate_default_model(Settings.from_env({"HOME": str(tmp_path)}))


def test_a_llamacpp_model_is_planned_for_llamacpp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    gguf = _gguf(tmp_path)
    facts = read_facts(gguf)
    spec = tmp_path / "airlock.yaml"
    spec.write_text(yaml.safe_dump({"models": [
        {"name": "small", "gguf": str(gguf), "engine": {"kind": "llamacpp", "ctx_size": 4096, "parallel": 2}},
    ]}))  # fmt: skip
    monkeypatch.setattr("airlock.plan.llamacpp.host_ram", lambda: 64 << 30)
    result = CliRunner().invoke(_cli(), ["--config", str(spec), "--json"])
    assert result.exit_code == 0, result.output
    p = json.loads(result.output)["models"][0]
    kv = facts.num_layers * 4096 * facts.num_kv_heads * (facts.head_dim + facts.v_head_dim) * 2  # f16
    assert p["engine"] == "llama.cpp" and p["ctx_size"] == 4096 and p["tokens_per_slot"] == 2048
    assert p["memory"]["kv_cache_bytes"] == kv and p["memory"]["weights_bytes"] == gguf.stat().st_size
    assert p["llama_server_args"] == ["--ctx-size", "4096", "--parallel", "2"]
    assert "engine_args" not in p and "vllm_version" not in p
    table = CliRunner().invoke(_cli(), ["--config", str(spec)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "(llama.cpp)" in table.output and "vLLM" not in table.output.replace("for vLLM models", "")
    monkeypatch.setattr(
        "airlock.plan.llamacpp.host_ram", lambda: 100 << 20
    )  # 100 MiB: the weights barely fit
    small = CliRunner().invoke(_cli(), ["--config", str(spec), "--json"])
    assert (
        small.exit_code == 6 and "exceed this host's" in json.loads(small.output)["models"][0]["problems"][0]
    )


def test_llamacpp_context_from_the_engine_and_its_args(tmp_path: Path) -> None:
    facts = read_facts(_gguf(tmp_path))
    assert llamacpp_options(8192, 4, ["-c", "2048", "--cache-type-k=q8_0"]) == LlamaCppOptions(
        ctx_size=2048, parallel=4, cache_type_k="q8_0", cache_type_v="f16")  # fmt: skip
    whole = plan_llamacpp(facts, LlamaCppOptions(ctx_size=0), ram_bytes=64 << 30)
    assert whole.ctx_size == facts.max_model_len  # ctx_size 0: the model's training context
    q8 = plan_llamacpp(facts, LlamaCppOptions(ctx_size=1024, cache_type_k="q8_0"), ram_bytes=0)
    f16 = plan_llamacpp(facts, LlamaCppOptions(ctx_size=1024), ram_bytes=0)
    assert q8.kv_bytes < f16.kv_bytes and q8.fits and "--cache-type-k" in q8.args
    with pytest.raises(ConfigError, match="cache type"):
        plan_llamacpp(facts, LlamaCppOptions(cache_type_k="q3_x"), ram_bytes=0)
    too_small = plan_llamacpp(facts, LlamaCppOptions(ctx_size=8192), ram_bytes=f16.file_bytes + (100 << 20))
    assert not too_small.fits and re.search(r"give ctx_size \d+ or less", too_small.problems[0])


# 5. the CPU's memory table ------------------------------------------------------------------------------


def test_the_cpu_table_says_cpu(model_dir: Path) -> None:
    result = CliRunner().invoke(
        _cli(), [str(model_dir), "--cpu", "--cpu-kv-space", "40"], env={"COLUMNS": "200"}
    )
    assert "memory (CPU)" in result.output and "per GPU" not in result.output


# 6. user text as typed -----------------------------------------------------------------------------------


def test_user_text_is_printed_as_typed(tmp_path: Path) -> None:
    folder = tmp_path / "m[red]x :x:"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({**CONFIG, "architectures": ["[bold]Arch[/bold]ForCausalLM"]})
    )
    result = CliRunner().invoke(_cli(), [str(folder), "--gpu", "h100-80gb"], env={"COLUMNS": "400"})
    assert f"plan: {folder}" in result.output
    assert "[bold]Arch[/bold]ForCausalLM" in result.output


# 7. the help at 80 columns -----------------------------------------------------------------------------


def test_option_help_reads_whole_at_80_columns() -> None:
    from airlock.cli.main import app

    result = CliRunner().invoke(app, ["plan", "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines)
    bare = typer.Typer(add_completion=False)
    bare.command()(plan_cli)
    command = typer.main.get_command(bare)
    helps = [h for p in command.params if p.param_type_name == "option" and (h := getattr(p, "help", None))]
    assert helps
    for text in helps:  # each option's help on one line, not cut or wrapped into a sliver
        assert any(text in line for line in lines), text
