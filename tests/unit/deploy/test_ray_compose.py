"""deploy compose over several hosts: head/ and worker/ compose files for vLLM on Ray, validated by
docker-compose 1.29 itself (``config`` needs no daemon), and the scripts they run checked by bash.

tests/integration/test_ray_multinode.py runs the same two scripts for real (Ray head and worker in two
network namespaces, vLLM with pipeline parallel 2 over them, a chat through the gateway).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from airlock.deploy.compose import ComposeOptions, read_env
from airlock.deploy.model import DeployOptions
from airlock.deploy.ray import (
    HEAD_ADDRESS_ENV,
    NODE_ADDRESS_ENV,
    RAY_TOKEN_ENV,
    RayOptions,
    RayRendered,
    head_script,
    render_ray_compose,
    worker_script,
)
from airlock.errors import DeployError
from airlock.settings import Settings

from .conftest import SpecWriter

ADDRESSES = {HEAD_ADDRESS_ENV: "10.0.0.1", NODE_ADDRESS_ENV: "10.0.0.2"}


def _compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (scripts/install-system-deps.sh installs it)")
        pytest.skip("docker-compose is not installed")
    return found


def _config(folder: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` in the folder as a host would run it (it reads .env there)."""
    return subprocess.run(
        [_compose_binary(), "-f", str(folder / "docker-compose.yml"), "config"],
        capture_output=True, text=True, cwd=folder, timeout=120, check=False,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock", **(env or {})},
    )  # fmt: skip


def _validated(folder: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = _config(folder, env)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def _llama(write_spec: SpecWriter, store: Path, tp: int, pp: int, count: int = 4) -> Path:
    return write_spec(
        [{"name": "llama", "aliases": ["default"], "path": str(store / "models" / "llama-8b"),
          "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0", "tensor_parallel_size": tp,
                     "pipeline_parallel_size": pp, "max_model_len": 4096}},
         {"name": "smollm2", "gguf": str(store / "gguf" / "tiny.gguf"), "engine": {"kind": "llamacpp"}}],
        hardware={"gpu": "rtx-4090", "count": count},
    )  # fmt: skip


def _render(spec: Path, settings: Settings, out: Path, **ray: Any) -> RayRendered:
    deploy = DeployOptions(spec=spec, settings=settings, host_gpus=0)
    return render_ray_compose(ComposeOptions(deploy=deploy, out=out), RayOptions(**ray))


def test_pp2_over_two_hosts_gives_a_head_and_a_worker_file(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    rendered = _render(
        _llama(write_spec, store, tp=2, pp=2), settings, out, gpus_per_node=2, head_address="10.0.0.1"
    )
    assert rendered.engine == "engine-llama" and rendered.split is not None
    assert (rendered.split.nodes, rendered.split.gpus_per_node) == (2, 2)
    assert rendered.head.out == out / "head" and rendered.worker_file == out / "worker" / "docker-compose.yml"
    assert not (out / "docker-compose.yml").exists()

    head_env, worker_env = read_env(out / "head" / ".env"), read_env(out / "worker" / ".env")
    assert head_env[HEAD_ADDRESS_ENV] == worker_env[HEAD_ADDRESS_ENV] == "10.0.0.1"
    assert len(head_env[RAY_TOKEN_ENV]) >= 40 and head_env[RAY_TOKEN_ENV] == worker_env[RAY_TOKEN_ENV]
    assert worker_env[NODE_ADDRESS_ENV] == ""  # each worker host names itself

    head = _validated(out / "head")
    services = head["services"]
    assert set(services) == {"gateway", "engine-llama", "engine-smollm2"}
    ray_head = services["engine-llama"]
    assert ray_head["network_mode"] == "host" and "networks" not in ray_head and ray_head["ipc"] == "host"
    assert ray_head["pull_policy"] == "never" and ray_head["image"].startswith(
        "registry.site:5000/vllm/vllm-openai@sha256:"
    )
    assert ray_head["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 2, "capabilities": ["gpu"]}
    ]
    assert ray_head["volumes"] == [f"{store.resolve()}:/store:ro"]
    env = ray_head["environment"]
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == head_env[RAY_TOKEN_ENV]
    assert env[HEAD_ADDRESS_ENV] == "10.0.0.1" and env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_API_KEY"] == head_env["AIRLOCK_ENGINE_KEY"]
    # the script as bash gets it: `config` prints compose's own escaping back ($$), which `up` undoes
    script = ray_head["command"][0].replace("$$", "$")
    assert ray_head["entrypoint"] == ["/bin/bash", "-c"]
    engine = next(e for e in rendered.head.deployment.engines if e.name == "engine-llama")
    assert script == head_script(engine, rendered.split, RayOptions(gpus_per_node=2))
    assert '--node-ip-address="$AIRLOCK_HEAD_ADDRESS"' in script and "--num-gpus=2" in script
    assert 'get("GPU", 0) < 4' in script  # every host's GPUs before vLLM starts
    vllm = script.splitlines()[-1]
    assert vllm.startswith(
        "exec python3 -m vllm.entrypoints.openai.api_server --model /store/models/llama-8b"
    )
    assert "--tensor-parallel-size 2" in vllm and "--pipeline-parallel-size 2" in vllm
    assert vllm.endswith("--distributed-executor-backend ray")
    assert ray_head["healthcheck"]["test"][-1] == "http://127.0.0.1:8000/health"

    # the gateway: as deploy compose renders it, pointed at the head host where vLLM listens
    gateway = services["gateway"]
    assert gateway["extra_hosts"] == ["host.docker.internal:host-gateway"]
    assert set(gateway["networks"]) == {"engines", "edge"} and gateway["ports"] == ["127.0.0.1:8000:8080/tcp"]
    spec = yaml.safe_load((out / "head" / "gateway" / "airlock.yaml").read_text())
    urls = {m["name"]: m["engine"]["url"] for m in spec["models"]}
    assert urls == {
        "llama": "http://host.docker.internal:8000/v1",
        "smollm2": "http://engine-smollm2:8000/v1",
    }
    assert list(services["engine-smollm2"]["networks"]) == ["engines"]  # the engine that fits: as ever

    # a worker host: the address it must name, refused by compose until it does
    missing = _config(out / "worker")
    assert missing.returncode != 0 and NODE_ADDRESS_ENV in missing.stderr
    worker = _validated(out / "worker", {NODE_ADDRESS_ENV: "10.0.0.2"})
    (name,) = worker["services"]
    service = worker["services"][name]
    assert name == "engine-llama-ray-worker" and service["network_mode"] == "host"
    assert service["image"] == ray_head["image"] and service["pull_policy"] == "never"
    assert (
        service["environment"][NODE_ADDRESS_ENV] == "10.0.0.2"
        and "VLLM_API_KEY" not in service["environment"]
    )
    assert service["volumes"] == [f"{store.resolve()}:/store:ro"]
    worker_sh = service["command"][0].replace("$$", "$")
    assert worker_sh == worker_script(rendered.split)
    assert '--address="$AIRLOCK_HEAD_ADDRESS:6379"' in worker_sh and "--block" in worker_sh
    elsewhere = _validated(out / "worker", {NODE_ADDRESS_ENV: "10.0.0.2", "AIRLOCK_STORE": "/data/store"})
    assert elsewhere["services"][name]["volumes"] == ["/data/store:/store:ro"]


def test_scripts_are_valid_bash(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    rendered = _render(_llama(write_spec, store, tp=2, pp=2), settings, tmp_path / "site", gpus_per_node=2)
    engine = next(e for e in rendered.head.deployment.engines if e.name == rendered.engine)
    assert rendered.split is not None
    for script in (
        head_script(engine, rendered.split, RayOptions(gpus_per_node=2)),
        worker_script(rendered.split),
    ):
        done = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr


def test_a_second_render_keeps_the_token_and_the_hosts_addresses(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    spec, out = _llama(write_spec, store, tp=2, pp=2), tmp_path / "site"
    _render(spec, settings, out, gpus_per_node=2)
    first = read_env(out / "head" / ".env")
    assert first[HEAD_ADDRESS_ENV] == ""
    (out / "worker" / ".env").write_text(
        (out / "worker" / ".env")
        .read_text()
        .replace(f"{NODE_ADDRESS_ENV}=\n", f"{NODE_ADDRESS_ENV}=10.0.0.2\n")
    )
    rendered = _render(spec, settings, out, gpus_per_node=2, head_address="10.0.0.1")
    second = read_env(out / "head" / ".env")
    assert (
        second[RAY_TOKEN_ENV] == first[RAY_TOKEN_ENV]
        and second["AIRLOCK_ENGINE_KEY"] == first["AIRLOCK_ENGINE_KEY"]
    )
    assert second[HEAD_ADDRESS_ENV] == "10.0.0.1"
    assert read_env(out / "worker" / ".env")[NODE_ADDRESS_ENV] == "10.0.0.2"
    assert not any(HEAD_ADDRESS_ENV in n for n in rendered.notes)


def test_a_head_without_its_address_is_refused_by_compose(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    rendered = _render(_llama(write_spec, store, tp=2, pp=2), settings, tmp_path / "site", gpus_per_node=2)
    assert any(f"set {HEAD_ADDRESS_ENV}" in n for n in rendered.notes)
    done = _config(rendered.head.out)
    assert done.returncode != 0 and HEAD_ADDRESS_ENV in done.stderr


def test_an_engine_that_fits_renders_the_one_host_file(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    rendered = _render(_llama(write_spec, store, tp=2, pp=2), settings, out, gpus_per_node=4)
    assert rendered.worker_file is None and rendered.split is None and rendered.head.out == out
    assert (out / "docker-compose.yml").is_file() and not (out / "head").exists()
    assert any("no Ray" in n for n in rendered.notes)
    assert "network_mode" not in _validated(out)["services"]["engine-llama"]


def test_tensor_parallel_wider_than_a_host_is_refused(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    with pytest.raises(DeployError, match="tensor parallel 4 does not fit on a node of 2 GPUs"):
        _render(_llama(write_spec, store, tp=4, pp=1), settings, tmp_path / "site", gpus_per_node=2)


def test_two_engines_over_ray_need_two_head_hosts(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    engine = {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0", "tensor_parallel_size": 1,
              "pipeline_parallel_size": 2, "max_model_len": 4096}  # fmt: skip
    spec = write_spec(
        [{"name": f"m{i}", "path": str(store / "models" / "llama-8b"), "engine": engine} for i in range(2)],
        hardware={"gpu": "h100", "count": 4},
    )
    with pytest.raises(DeployError, match="a head host runs one Ray cluster"):
        _render(spec, settings, tmp_path / "site", gpus_per_node=1)


def test_vllm_listens_on_the_engine_port_chosen_for_the_head_host(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    _render(
        _llama(write_spec, store, tp=2, pp=2),
        settings,
        out,
        gpus_per_node=2,
        head_address="10.0.0.1",
        engine_port=8100,
    )
    service = _validated(out / "head")["services"]["engine-llama"]
    vllm = service["command"][0].splitlines()[-1]
    assert vllm.count("--port") == 1 and "--port 8100" in vllm
    assert service["healthcheck"]["test"][-1] == "http://127.0.0.1:8100/health"
    spec = yaml.safe_load((out / "head" / "gateway" / "airlock.yaml").read_text())
    assert spec["models"][0]["engine"]["url"] == "http://host.docker.internal:8100/v1"


def _airlock(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line: one line per error, its exit code."""
    env = {**os.environ, "AIRLOCK_HOME": str(tmp_path / "home"), "AIRLOCK_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "airlock.cli.main", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_cli_renders_head_and_worker_and_prints_the_heads_file(
    write_spec: SpecWriter, store: Path, tmp_path: Path
) -> None:
    spec, out = _llama(write_spec, store, tp=2, pp=2), tmp_path / "site"
    done = _airlock(
        tmp_path,
        "deploy",
        "compose",
        str(spec),
        "--out",
        str(out),
        "--gpus-per-node",
        "2",
        "--head-address",
        "10.0.0.1",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out / "head" / "docker-compose.yml")
    assert (
        str(out / "worker" / "docker-compose.yml") in done.stderr
        and "runs on Ray over 2 hosts" in done.stderr
    )
    assert read_env(out / "worker" / ".env")[HEAD_ADDRESS_ENV] == "10.0.0.1"
    alone = _airlock(
        tmp_path, "deploy", "compose", str(spec), "--out", str(out), "--head-address", "10.0.0.1"
    )
    assert alone.returncode == 2 and "--head-address goes with --gpus-per-node" in alone.stderr
    assert "Traceback" not in alone.stderr
