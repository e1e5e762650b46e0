"""render_compose: the file docker-compose 1.29 itself validates (``config`` needs no daemon), and what
compose would replace on a second ``up`` (``config --hash``), the monitoring profile, the checks
before ``up`` (a port in use, a daemon that does not answer), and the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from airlock.deploy.compose import (
    ComposeOptions,
    Docker,
    Rendered,
    check_daemon,
    check_port,
    read_env,
    render_compose,
)
from airlock.deploy.model import DeployOptions
from airlock.errors import DeployError
from airlock.gateway.metrics import GatewayMetrics
from airlock.settings import Settings

from .conftest import SpecWriter


def _compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (scripts/install-system-deps.sh installs it)")
        pytest.skip("docker-compose is not installed")
    return found


def _config(rendered: Rendered, *args: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` as the site would run it, in the rendered folder (it reads .env there)."""
    return subprocess.run(
        [_compose_binary(), "-f", str(rendered.compose_file), "config", *args],
        capture_output=True, text=True, cwd=rendered.out, timeout=120, check=False,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},  # no daemon needed
    )  # fmt: skip


def _render(spec: Path, settings: Settings, out: Path, **kw: Any) -> Rendered:
    deploy = DeployOptions(spec=spec, settings=settings, host_gpus=0, force=kw.pop("force", False))
    return render_compose(ComposeOptions(deploy=deploy, out=out, **kw))


def _validated(rendered: Rendered) -> dict[str, Any]:
    done = _config(rendered)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_cpu_deployment_validates_and_keeps_its_promises(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    rendered = _render(write_spec(), settings, tmp_path / "out")
    config = _validated(rendered)
    services = config["services"]
    assert set(services) == {"gateway", "engine-smollm2"}
    assert all(s["pull_policy"] == "never" and s["restart"] == "unless-stopped" for s in services.values())
    assert "docker-compose 1.29 does not act on it" in rendered.compose_file.read_text()
    assert any("pull_policy" in note for note in rendered.notes)
    # the gateway is the only published port; engines only on the internal network
    assert [s for s, v in services.items() if v.get("ports")] == ["gateway"]
    assert services["gateway"]["ports"] == ["127.0.0.1:8000:8080/tcp"]
    assert config["networks"]["engines"]["internal"] is True
    assert list(services["engine-smollm2"]["networks"]) == ["engines"]
    # the store read-only, the engine's argv exactly as serve's adapter gives it, the key from .env
    engine = services["engine-smollm2"]
    assert engine["volumes"] == [f"{store.resolve()}:/store:ro"]
    assert engine["entrypoint"] == ["/opt/airlock/llama.cpp/bin/llama-server"]
    assert engine["command"][:2] == ["--model", "/store/gguf/tiny.gguf"]
    assert engine["shm_size"] in (67108864, "67108864")
    key = read_env(rendered.out / ".env")["AIRLOCK_ENGINE_KEY"]
    assert len(key) >= 40 and engine["environment"]["LLAMA_API_KEY"] == key
    assert services["gateway"]["environment"]["AIRLOCK_ENGINE_KEY"] == key
    assert engine["environment"]["HF_HUB_OFFLINE"] == "1"
    assert engine["healthcheck"]["test"][-1] == "http://127.0.0.1:8000/health"
    assert engine["healthcheck"]["start_period"] == "2m"  # the engine's startup_timeout_s, 120
    # keys and audit state on the named volume; the gateway's spec mounted read-only
    assert services["gateway"]["volumes"] == [
        "state:/var/lib/airlock:rw",
        f"{rendered.out}/gateway/airlock.yaml:/etc/airlock/airlock.yaml:ro",
    ]
    assert config["volumes"] == {"state": {}}
    assert stat.S_IMODE((rendered.out / ".env").stat().st_mode) == 0o600
    # no secret in the compose file itself
    assert key not in rendered.compose_file.read_text()


def test_gpu_engine_reserves_plans_devices_and_shares_ipc(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    spec = write_spec(
        [{"name": "llama", "path": str(store / "models" / "llama-8b"),
          "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0"}}],
        hardware={"gpu": "rtx-4090", "count": 4},
    )  # fmt: skip
    rendered = _render(spec, settings, tmp_path / "out")
    engine = _validated(rendered)["services"]["engine-llama"]
    devices = engine["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0", "1"], "capabilities": ["gpu"]}]
    assert engine["ipc"] == "host" and "entrypoint" not in engine
    assert re.match(r"registry\.site:5000/vllm/vllm-openai@sha256:[0-9a-f]{64}$", engine["image"])
    command = engine["command"]
    assert command[command.index("--tensor-parallel-size") + 1] == "2"
    assert engine["environment"]["HF_HUB_CACHE"] == "/store/hub"
    assert engine["healthcheck"]["start_period"] == "15m"  # vLLM's startup_timeout_s, 900


def _services(rendered: Rendered) -> dict[str, str]:
    """Each service's configuration as compose resolves it (what its config hash covers, but the
    image's ID, for which ``config --hash`` needs a daemon: the integration test runs that)."""
    services = _validated(rendered)["services"]
    return {name: json.dumps(config, sort_keys=True) for name, config in services.items()}


def test_a_second_render_changes_only_the_services_whose_config_changed(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    """compose recreates a container when its configuration moves: a new --parallel moves the
    engine's only; a new alias (the gateway's mounted spec, hashed into a label) the gateway's only."""
    gguf = str(store / "gguf" / "tiny.gguf")
    models: list[dict[str, Any]] = [
        {"name": "smollm2", "gguf": gguf, "engine": {"kind": "llamacpp", "parallel": 2}},
        {"name": "other", "gguf": gguf, "engine": {"kind": "llamacpp"}},
    ]
    out = tmp_path / "out"
    first = _services(_render(write_spec(models), settings, out))
    again = _services(_render(write_spec(models), settings, out))
    assert again == first, "the same spec renders the same (the .env's key is kept)"
    models[0]["engine"] = {"kind": "llamacpp", "parallel": 3}
    changed = _services(_render(write_spec(models), settings, out))
    assert {s for s in first if first[s] != changed[s]} == {"engine-smollm2"}
    models[1]["aliases"] = ["default"]
    aliased = _services(_render(write_spec(models), settings, out))
    assert {s for s in changed if changed[s] != aliased[s]} == {"gateway"}


def test_monitoring_profile_with_images_from_the_store_and_a_dashboard_of_real_metrics(
    write_spec: SpecWriter, settings: Settings, tmp_path: Path
) -> None:
    rendered = _render(write_spec(), settings, tmp_path / "out", monitoring=True)
    services = _validated(rendered)["services"]
    assert services["prometheus"]["profiles"] == ["monitoring"] and services["grafana"]["profiles"] == [
        "monitoring"
    ]
    assert services["prometheus"]["image"] == "prom/prometheus:v2.53.0"
    assert "ports" not in services["prometheus"]
    prometheus = yaml.safe_load((rendered.out / "monitoring/prometheus.yml").read_text())
    job = prometheus["scrape_configs"][0]
    assert job["static_configs"][0]["targets"] == ["gateway:8080"]
    assert job["authorization"]["credentials_file"] == "/etc/prometheus/airlock.key"
    assert read_env(rendered.out / ".env")["GRAFANA_ADMIN_PASSWORD"]
    # every metric the dashboard queries is one the gateway exports
    dashboard = json.loads((rendered.out / "monitoring/grafana/dashboards/airlock.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bairlock_[a-z_]+", e)}
    metrics = GatewayMetrics(lambda: [("m", "llamacpp", True, 0)])
    metrics.registry.get_sample_value("airlock_build_info", {"version": "x"})  # registered
    exported = {s.name for family in metrics.registry.collect() for s in family.samples}
    exported |= {
        f"{name}_bucket"
        for name in ("airlock_request_duration_seconds", "airlock_time_to_first_token_seconds")
    }
    exported |= {
        "airlock_requests_total",
        "airlock_prompt_tokens_total",
        "airlock_completion_tokens_total",
        "airlock_requests_in_flight",
    }  # fmt: skip - families with no child yet export no sample
    assert used <= exported, used - exported
    assert {
        "airlock_engine_up",
        "airlock_engine_restarts_total",
        "airlock_time_to_first_token_seconds_bucket",
    } <= used


def test_monitoring_images_must_be_in_the_store(
    write_spec: SpecWriter, settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(DeployError, match="Grafana: image grafana/grafana:99 is not in the store") as err:
        _render(write_spec(), settings, tmp_path / "out", monitoring=True, grafana_image="grafana/grafana:99")
    assert "airlock install" in str(err.value)


def test_a_port_in_use_is_named() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(DeployError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port("127.0.0.1", port)


def test_a_daemon_that_is_not_running_is_named(tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        if os.environ.get("CI"):
            pytest.fail("docker is not installed (scripts/install-system-deps.sh installs docker.io)")
        pytest.skip("docker is not installed")
    host = f"unix://{tmp_path}/docker.sock"
    with pytest.raises(DeployError, match=f"the docker daemon at {re.escape(host)} is not running") as err:
        check_daemon(Docker(host=host))
    assert "systemctl start docker" in str(err.value)


def _airlock(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line: one line per error, its exit code."""
    env = {**os.environ, "AIRLOCK_HOME": str(tmp_path / "home"), "AIRLOCK_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "airlock.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_renders_and_prints_the_file(write_spec: SpecWriter, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _airlock(tmp_path, "deploy", "compose", str(write_spec()), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out / "docker-compose.yml")
    assert "engine-smollm2" in result.stderr and "pull_policy" in result.stderr


def test_cli_refuses_what_plan_rejects_in_one_line(
    write_spec: SpecWriter, store: Path, tmp_path: Path
) -> None:
    spec = write_spec(
        [{"name": "llama", "path": str(store / "models" / "llama-8b"),
          "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0", "max_model_len": 8192}}],
        hardware={"gpu": "t4-16gb"},
    )  # fmt: skip
    out = tmp_path / "out"
    refused = _airlock(tmp_path, "deploy", "compose", str(spec), "--out", str(out))
    assert refused.returncode == 6, refused.stderr
    assert "cannot start on 1 x NVIDIA T4" in refused.stderr and "Traceback" not in refused.stderr
    assert not (out / "docker-compose.yml").exists()
    forced = _airlock(tmp_path, "deploy", "compose", str(spec), "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "rendered with --force" in forced.stderr


def test_cli_image_not_in_the_store(write_spec: SpecWriter, tmp_path: Path) -> None:
    result = _airlock(
        tmp_path,
        "deploy",
        "compose",
        str(write_spec()),
        "--out",
        str(tmp_path / "o"),
        "--gateway-image",
        "airlock:9",
    )
    assert result.returncode == 23, result.stderr
    assert "image airlock:9 is not in the store" in result.stderr and "airlock install" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_remote_models_key_comes_from_env_not_the_file(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    gguf = str(store / "gguf" / "tiny.gguf")
    spec = write_spec(
        [{"name": "smollm2", "gguf": gguf},
         {"name": "big", "engine": {"kind": "remote", "url": "http://10.0.0.5:8000/v1", "api_key_env": "BIG_KEY"}}]
    )  # fmt: skip
    out = tmp_path / "out"
    rendered = _render(spec, settings, out)
    assert any("BIG_KEY" in note and "empty" in note for note in rendered.notes)
    assert set(_validated(rendered)["services"]) == {"gateway", "engine-smollm2"}  # no engine for a URL
    gw = yaml.safe_load((out / "gateway" / "airlock.yaml").read_text())
    assert gw["models"][1]["engine"] == {
        "kind": "remote",
        "url": "http://10.0.0.5:8000/v1",
        "api_key_env": "BIG_KEY",
    }
    (out / ".env").write_text((out / ".env").read_text().replace("BIG_KEY=", "BIG_KEY=s3cret"))
    again = _render(spec, settings, out)
    assert not any("BIG_KEY" in note for note in again.notes)
    assert _validated(again)["services"]["gateway"]["environment"]["BIG_KEY"] == "s3cret"
    assert "s3cret" not in again.compose_file.read_text()
