"""build_deployment: the spec's engines as services, argv from serve's adapters, images from the store."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from airlock.deploy.model import (
    LLAMA_SERVER_IN_IMAGE,
    DeployOptions,
    build_deployment,
    service_name,
)
from airlock.errors import CannotStartError, ConfigError, DeployError
from airlock.settings import Settings
from airlock.spec import parse_spec

from .conftest import REGISTRY, SpecWriter


def _options(spec: Path, settings: Settings, **kw: object) -> DeployOptions:
    return DeployOptions(spec=spec, settings=settings, host_gpus=0, **kw)  # type: ignore[arg-type]


def test_llamacpp_engine_runs_the_images_llama_server_on_the_store_mount(
    write_spec: SpecWriter, settings: Settings, store: Path
) -> None:
    d = build_deployment(_options(write_spec(), settings))
    (engine,) = d.engines
    assert engine.name == "engine-smollm2" and engine.kind == "llamacpp"
    assert engine.entrypoint == (LLAMA_SERVER_IN_IMAGE,)
    assert engine.command[:2] == ("--model", "/store/gguf/tiny.gguf")
    cmd = list(engine.command)
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--port") + 1] == "8000"
    assert cmd[cmd.index("--parallel") + 1] == "2" and cmd[cmd.index("--ctx-size") + 1] == "2048"
    assert engine.env["HF_HUB_OFFLINE"] == "1" and "LLAMA_API_KEY" not in engine.env
    assert engine.image == "airlock:0.1.0" and engine.image_id is not None
    assert engine.mounts[0].source == store.resolve() and engine.mounts[0].target == "/store"
    assert d.gateway.image == "airlock:0.1.0" and d.gateway.port == 8000
    gw = parse_spec(yaml.safe_load(d.gateway.spec_yaml))
    assert gw.gateway.host == "0.0.0.0" and gw.gateway.port == 8080
    remote = gw.models[0].engine
    assert remote.kind == "remote" and remote.url == "http://engine-smollm2:8000/v1"
    assert remote.api_key_env == d.engine_key_env and gw.models[0].aliases == ["default"]


def test_vllm_engine_takes_plans_args_and_the_registry_image_by_digest(
    write_spec: SpecWriter, settings: Settings, store: Path
) -> None:
    spec = write_spec(
        [{"name": "llama", "path": str(store / "models" / "llama-8b"),
          "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0"}}],
        hardware={"gpu": "rtx-4090", "count": 4},
    )  # fmt: skip
    d = build_deployment(_options(spec, settings))
    (engine,) = d.engines
    assert engine.image.startswith(f"{REGISTRY}/vllm/vllm-openai@sha256:") and engine.image_id is None
    cmd = list(engine.command)
    assert cmd[cmd.index("--model") + 1] == "/store/models/llama-8b"
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"  # plan filled it
    assert "--max-model-len" in cmd and engine.entrypoint is None
    assert engine.gpus == 2 and engine.gpu_ids == ("0", "1") and engine.shm_bytes is None
    assert engine.env["HF_HUB_CACHE"] == "/store/hub" and engine.api_key_env == "VLLM_API_KEY"
    assert any("GPU" in w for w in d.warnings)  # host_gpus=0


def test_a_model_plan_rejects_is_refused_unless_forced(
    write_spec: SpecWriter, settings: Settings, store: Path
) -> None:
    spec = write_spec(
        [{"name": "llama", "path": str(store / "models" / "llama-8b"),
          "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0", "max_model_len": 8192}}],
        hardware={"gpu": "t4-16gb"},
    )  # fmt: skip
    with pytest.raises(CannotStartError, match="cannot start on 1 x NVIDIA T4"):
        build_deployment(_options(spec, settings))
    d = build_deployment(_options(spec, settings, force=True))
    assert any("rendered with --force" in w for w in d.warnings)


def test_more_gpus_than_the_spec_has_is_refused_unless_forced(
    write_spec: SpecWriter, settings: Settings, store: Path
) -> None:
    spec = write_spec(
        [{"name": f"m{i}", "path": str(store / "models" / "llama-8b"),
          "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0", "tensor_parallel_size": 1,
                     "max_model_len": 4096}}
         for i in range(3)],
        hardware={"gpu": "h100", "count": 2},
    )  # fmt: skip
    with pytest.raises(ConfigError, match="take 3 GPUs; the spec's hardware has 2"):
        build_deployment(_options(spec, settings))
    d = build_deployment(_options(spec, settings, force=True))
    assert [e.gpu_ids for e in d.engines] == [("0",), ("1",), ("2",)]


def test_an_image_not_in_the_store_names_it_and_install(
    write_spec: SpecWriter, settings: Settings, store: Path
) -> None:
    spec = write_spec(
        [{"name": "llama", "path": str(store / "models" / "llama-8b"),
          "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.12.0"}}],
    )  # fmt: skip
    with pytest.raises(DeployError, match=r"vllm/vllm-openai:v0\.12\.0 is not in the store") as err:
        build_deployment(_options(spec, settings))
    assert "airlock install" in str(err.value)
    with pytest.raises(DeployError, match="image nope:1 is not in the store"):
        build_deployment(_options(write_spec(), settings, gateway_image="nope:1"))


def test_service_names_are_dns_labels_and_unique() -> None:
    taken: set[str] = set()
    first = service_name("Org/Model_v1.5", taken)
    assert first == "engine-org-model-v1-5"
    taken.add(first)
    assert service_name("org/model-v1.5", taken) == "engine-org-model-v1-5-2"
    assert len(service_name("x" * 200, set())) == 63
