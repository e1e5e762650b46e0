"""``airlock deploy compose``: a :class:`~airlock.deploy.model.Deployment` as docker-compose.yml + .env, and
bringing it up.

The file is in the Compose Specification format (no ``version:`` key), which Debian's docker-compose
1.29 reads (it checks it against its bundled ``compose_spec.json``) as does compose v2. What 1.29 does
with each key that matters here, read from its source:

* GPUs: ``deploy.resources.reservations.devices`` becomes the container's device requests
  (``Project.get_device_requests``), without ``--compatibility``; no ``runtime: nvidia`` needed.
* ``pull_policy: never``: 1.29 validates it but does not act on it (``up`` pulls an image it lacks).
  So the file says so in a comment, and ``compose_up`` checks every image is in the daemon, with the
  image ID the store recorded, before it runs ``up``: nothing is pulled, a surprise image stops it.
* ``profiles``: the monitoring services start only with ``--profile monitoring``.
* ``internal: true`` on the engines' network: no route out. The gateway alone joins a second network
  as well, where its one published port lives.

``up`` replaces only what changed: compose hashes each service's configuration and recreates the
containers whose hash moved. A file a service reads (the gateway's airlock.yaml, Prometheus's
config) is not in that hash, so its SHA-256 goes in a label that is.

Example::

    rendered = render_compose(ComposeOptions(deploy=DeployOptions(spec=Path("airlock.yaml")), out=Path("site")))
    compose_up(rendered.out, Docker())
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from airlock.common.fileio import write_atomic
from airlock.deploy.model import (
    ENGINE_KEY_ENV,
    Deployment,
    DeployOptions,
    EngineService,
    build_deployment,
    named_image,
    store_db,
)
from airlock.engines.base import OFFLINE_ENV
from airlock.errors import DeployError

COMPOSE_FILE = "docker-compose.yml"
ENV_FILE = ".env"
GATEWAY_SPEC_FILE = "gateway/airlock.yaml"
PROMETHEUS_FILE = "monitoring/prometheus.yml"
PROMETHEUS_KEY_FILE = "monitoring/prometheus.key"
GRAFANA_DIR = "monitoring/grafana"
ENGINES_NETWORK = "engines"
EDGE_NETWORK = "edge"
STATE_VOLUME = "state"
MONITORING = "monitoring"
GRAFANA_PORT = 3000
PROMETHEUS_PORT = 9090
GRAFANA_PASSWORD_ENV = "GRAFANA_ADMIN_PASSWORD"  # noqa: S105 - the variable's name, not a password
HEALTH_INTERVAL_S = 5
#: The health probe inside a container: the images have python3, not curl.
_PROBE = "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)"
PULL_NOTE = (
    "pull_policy: never is set on every service, but docker-compose 1.29 does not act on it (compose v2 "
    "does): start it with `airlock deploy compose --up`, which checks every image is loaded first"
)


@dataclass(frozen=True)
class ComposeOptions:
    deploy: DeployOptions
    out: Path
    monitoring: bool = False
    prometheus_image: str | None = None
    grafana_image: str | None = None


@dataclass(frozen=True)
class Image:
    """An image a service runs, and the ID docker must show for it (None: pinned by digest)."""

    service: str
    reference: str
    image_id: str | None


@dataclass(frozen=True)
class Rendered:
    out: Path
    deployment: Deployment
    files: tuple[Path, ...]  # every file written
    images: tuple[Image, ...]
    monitoring: bool
    notes: tuple[str, ...]  # warnings from the deployment, and what the format cannot say

    @property
    def compose_file(self) -> Path:
        return self.out / COMPOSE_FILE


def render_compose(options: ComposeOptions, deployment: Deployment | None = None) -> Rendered:
    """Write docker-compose.yml, .env, the gateway's spec (and monitoring's files) into ``options.out``;
    ``deployment``: one already built from ``options.deploy`` (else it is built here)."""
    if deployment is None:
        deployment = build_deployment(options.deploy)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    env = _env_values(out / ENV_FILE, deployment, monitoring=options.monitoring)
    images = [Image("gateway", deployment.gateway.image, deployment.gateway.image_id)]
    images += [Image(e.name, e.image, e.image_id) for e in deployment.engines]
    files: dict[str, bytes] = {GATEWAY_SPEC_FILE: deployment.gateway.spec_yaml.encode()}
    services: dict[str, Any] = {"gateway": _gateway(deployment, files[GATEWAY_SPEC_FILE])}
    for engine in deployment.engines:
        services[engine.name] = _engine(engine)
    if options.monitoring:
        db = store_db(deployment.store)
        prom = named_image(
            db, deployment.store, options.prometheus_image, "prometheus", "Prometheus", "--prometheus-image"
        )
        graf = named_image(
            db, deployment.store, options.grafana_image, "grafana", "Grafana", "--grafana-image"
        )
        images += [Image("prometheus", *prom), Image("grafana", *graf)]
        files.update(_monitoring_files())
        services["prometheus"] = _prometheus(prom[0], files[PROMETHEUS_FILE])
        services["grafana"] = _grafana(graf[0], deployment, files)
    document = {
        # the image IDs docker must show for images loaded by tag (checked before `up`)
        "x-airlock-image-ids": {i.reference: i.image_id for i in images if i.image_id is not None},
        "services": services,
        "networks": {
            ENGINES_NETWORK: {"internal": True},  # engines: no route out
            EDGE_NETWORK: {},  # the gateway's published port (and Grafana's)
        },
        "volumes": {STATE_VOLUME: {}, **({"prometheus": {}, "grafana": {}} if options.monitoring else {})},
    }
    header = (
        f"# Rendered by `airlock deploy compose` from {options.deploy.spec.resolve()}: rerun it rather than edit.\n"
        f"# {PULL_NOTE}.\n"
        f"# Keys: docker-compose -f {COMPOSE_FILE} run --rm --no-deps gateway keys create NAME\n"
    )
    written: list[Path] = []
    for rel, data in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
        written.append(path)
    text = header + yaml.safe_dump(document, sort_keys=False, width=120)
    write_atomic(out / COMPOSE_FILE, text.encode())
    write_atomic(out / ENV_FILE, "".join(f"{k}={v}\n" for k, v in env.items()).encode(), mode=0o600)
    written += [out / COMPOSE_FILE, out / ENV_FILE]
    unset = [name for name in deployment.gateway.secret_env if not env.get(name)]
    empty = (
        f"{name} (a remote model's key) is empty in {out / ENV_FILE}: set it there before --up"
        for name in unset
    )
    notes = (*deployment.warnings, PULL_NOTE, *empty)
    return Rendered(out, deployment, tuple(written), tuple(images), options.monitoring, notes)


def _env_values(path: Path, deployment: Deployment, *, monitoring: bool) -> dict[str, str]:
    """The .env: the project's name, and secrets made once (a rerun keeps them, so nothing restarts)."""
    old = read_env(path)
    env = {
        "COMPOSE_PROJECT_NAME": deployment.name,
        ENGINE_KEY_ENV: old.get(ENGINE_KEY_ENV) or secrets.token_urlsafe(32),
    }
    if monitoring or GRAFANA_PASSWORD_ENV in old:
        env[GRAFANA_PASSWORD_ENV] = old.get(GRAFANA_PASSWORD_ENV) or secrets.token_urlsafe(18)
    for name in deployment.gateway.secret_env:  # a remote model's key: the operator writes it once
        env[name] = old.get(name, "")
    return env


def read_env(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (as compose reads them, without quotes); empty when there is no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _healthcheck(port: int, path: str, start_s: float) -> dict[str, Any]:
    return {
        "test": ["CMD", "python3", "-c", _PROBE, f"http://127.0.0.1:{port}{path}"],
        "interval": f"{HEALTH_INTERVAL_S}s",
        "timeout": "5s",
        "retries": 3,
        "start_period": f"{int(start_s)}s",
    }


def _gateway(deployment: Deployment, spec_yaml: bytes) -> dict[str, Any]:
    gw = deployment.gateway
    return {
        "image": gw.image,
        "pull_policy": "never",
        "command": ["serve", "--config", gw.spec_path],
        "environment": {
            **OFFLINE_ENV,
            ENGINE_KEY_ENV: f"${{{ENGINE_KEY_ENV}}}",
            **{name: f"${{{name}}}" for name in gw.secret_env},  # remote models' keys, from .env
        },
        "ports": [f"{gw.host}:{gw.port}:{gw.container_port}"],
        "volumes": [f"{STATE_VOLUME}:{gw.state_dir}", f"./{GATEWAY_SPEC_FILE}:{gw.spec_path}:ro"],
        "networks": [ENGINES_NETWORK, EDGE_NETWORK],
        "depends_on": [e.name for e in deployment.engines],
        "restart": "unless-stopped",
        "healthcheck": _healthcheck(gw.container_port, "/health", 30),
        "labels": {"io.airlock.role": "gateway", "io.airlock.spec-sha256": _sha(spec_yaml)},
    }


def _engine(engine: EngineService) -> dict[str, Any]:
    service: dict[str, Any] = {"image": engine.image, "pull_policy": "never"}
    if engine.entrypoint is not None:
        service["entrypoint"] = list(engine.entrypoint)
    service["command"] = list(engine.command)
    service["environment"] = {**engine.env, engine.api_key_env: f"${{{ENGINE_KEY_ENV}}}"}
    service["volumes"] = [f"{m.source}:{m.target}:ro" for m in engine.mounts]
    service["networks"] = [ENGINES_NETWORK]
    service["restart"] = "unless-stopped"
    if engine.shm_bytes is None:
        service["ipc"] = "host"
    else:
        service["shm_size"] = engine.shm_bytes
    service["healthcheck"] = _healthcheck(engine.port, engine.health_path, engine.startup_s)
    if engine.memory_bytes is not None:
        service["mem_reservation"] = engine.memory_bytes
    if engine.cpus is not None:
        service["cpus"] = engine.cpus
    if engine.gpus:
        device: dict[str, Any] = {"driver": "nvidia", "capabilities": ["gpu"]}
        if engine.gpu_ids:
            device["device_ids"] = list(engine.gpu_ids)
        else:
            device["count"] = engine.gpus
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    service["labels"] = {"io.airlock.role": "engine", "io.airlock.model": engine.model}
    return service


# -- monitoring --------------------------------------------------------------------------------------


def _asset(name: str) -> bytes:
    return resources.files("airlock.deploy").joinpath("assets", name).read_bytes()


def _monitoring_files() -> dict[str, bytes]:
    prometheus = {
        "global": {"scrape_interval": "15s"},
        "scrape_configs": [
            {
                "job_name": "airlock",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": "/etc/prometheus/airlock.key"},
                "static_configs": [{"targets": ["gateway:8080"]}],
            }
        ],
    }
    datasource = {
        "apiVersion": 1,
        "datasources": [
            {"name": "Prometheus", "uid": "airlock-prometheus", "type": "prometheus", "access": "proxy",
             "url": f"http://prometheus:{PROMETHEUS_PORT}", "isDefault": True},
        ],
    }  # fmt: skip
    dashboards = {
        "apiVersion": 1,
        "providers": [
            {"name": "airlock", "type": "file", "options": {"path": "/var/lib/grafana/dashboards"}},
        ],
    }
    return {
        PROMETHEUS_FILE: yaml.safe_dump(prometheus, sort_keys=False).encode(),
        f"{GRAFANA_DIR}/provisioning/datasources/airlock.yml": yaml.safe_dump(
            datasource, sort_keys=False
        ).encode(),
        f"{GRAFANA_DIR}/provisioning/dashboards/airlock.yml": yaml.safe_dump(
            dashboards, sort_keys=False
        ).encode(),
        f"{GRAFANA_DIR}/dashboards/airlock.json": _asset("grafana-dashboard.json"),
    }


def _prometheus(image: str, config: bytes) -> dict[str, Any]:
    return {
        "image": image,
        "pull_policy": "never",
        "profiles": [MONITORING],
        "volumes": [
            f"./{PROMETHEUS_FILE}:/etc/prometheus/prometheus.yml:ro",
            f"./{PROMETHEUS_KEY_FILE}:/etc/prometheus/airlock.key:ro",
            "prometheus:/prometheus",
        ],
        "networks": [ENGINES_NETWORK],  # it reaches the gateway there; nothing reaches it from outside
        "restart": "unless-stopped",
        "labels": {"io.airlock.role": "monitoring", "io.airlock.config-sha256": _sha(config)},
    }


def _grafana(image: str, deployment: Deployment, files: Mapping[str, bytes]) -> dict[str, Any]:
    provisioned = b"".join(data for rel, data in sorted(files.items()) if rel.startswith(GRAFANA_DIR))
    return {
        "image": image,
        "pull_policy": "never",
        "profiles": [MONITORING],
        "environment": {
            "GF_SECURITY_ADMIN_PASSWORD": f"${{{GRAFANA_PASSWORD_ENV}}}",
            "GF_ANALYTICS_REPORTING_ENABLED": "false",
            "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
            "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",
            "GF_NEWS_NEWS_FEED_ENABLED": "false",
            "GF_PLUGINS_PLUGIN_ADMIN_ENABLED": "false",
        },
        "ports": [f"127.0.0.1:{GRAFANA_PORT}:{GRAFANA_PORT}"],
        "volumes": [
            f"./{GRAFANA_DIR}/provisioning:/etc/grafana/provisioning:ro",
            f"./{GRAFANA_DIR}/dashboards:/var/lib/grafana/dashboards:ro",
            "grafana:/var/lib/grafana",
        ],
        "networks": [ENGINES_NETWORK, EDGE_NETWORK],
        "depends_on": ["prometheus"],
        "restart": "unless-stopped",
        "labels": {"io.airlock.role": "monitoring", "io.airlock.config-sha256": _sha(provisioned)},
    }


# -- running it --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Docker:
    """The docker and docker-compose clients, against one daemon (None: DOCKER_HOST or the default)."""

    host: str | None = None
    docker: str = "docker"
    compose: str = "docker-compose"
    timeout_s: float = 600.0

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.host is not None:
            env["DOCKER_HOST"] = self.host
        return env

    def _binary(self, name: str) -> str:
        found = shutil.which(name)
        if found is None:
            raise DeployError(
                f"{name} is not installed",
                hint="install Debian's docker.io and docker-compose (or put them on PATH)",
            )
        return found

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._call([self._binary(self.docker), *args], check=check, cwd=None)

    def compose_run(self, out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self._binary(self.compose), "--project-directory", str(out), "-f", str(out / COMPOSE_FILE)]
        return self._call([*argv, *args], check=check, cwd=out)

    def _call(self, argv: list[str], *, check: bool, cwd: Path | None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=self._env(),
            cwd=cwd,
            timeout=self.timeout_s,
            check=False,
        )
        if check and done.returncode != 0:
            raise DeployError(
                f"{Path(argv[0]).name} {' '.join(argv[1:3])}... failed ({done.returncode}): "
                f"{_tail(done.stderr or done.stdout, 8)}",
                hint=_fix_for(done.stderr + done.stdout),
            )
        return done


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


_FIXES: tuple[tuple[str, str], ...] = (
    (r"address already in use|port is already allocated", "another process holds that port: stop it, or "
     "change gateway.port in the spec and render again"),
    (r"Cannot connect to the Docker daemon|Is the docker daemon running|connection refused.*docker\.sock",
     "start the daemon (systemctl start docker) or point DOCKER_HOST at it"),
    (r"could not select device driver|nvidia-container|unknown or invalid runtime name: nvidia",
     "install the NVIDIA container toolkit and restart docker (airlock doctor checks it)"),
    (r"CUDA out of memory|out of memory|OOM|Killed", "the model does not fit: lower max_model_len or "
     "gpu_memory_utilization (`airlock plan` shows what fits)"),
    (r"No such file or directory|does not exist|failed to load model|unable to load model",
     "the model is not where the engine looks: `airlock install` it into the store the spec names"),
    (r"pull access denied|manifest unknown|not found: manifest|repository does not exist",
     "the image is not in the daemon: `airlock install DIR --docker` (or --registry) loads it"),
)  # fmt: skip


def _fix_for(text: str) -> str:
    for pattern, fix in _FIXES:
        if re.search(pattern, text, re.IGNORECASE):
            return fix
    return "see the log lines above; `docker-compose logs SERVICE` has the rest"


def check_daemon(docker: Docker) -> str:
    """The daemon's version; a clear error when it does not answer."""
    done = docker.run("version", "--format", "{{.Server.Version}}", check=False)
    if done.returncode != 0:
        where = docker.host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise DeployError(
            f"the docker daemon at {where} is not running (or not reachable): {_tail(done.stderr, 2)}",
            hint="start it (systemctl start docker), or point DOCKER_HOST (--docker-host) at it",
        )
    return done.stdout.strip()


def check_images(docker: Docker, images: Sequence[Image]) -> None:
    """Every image in the daemon already (nothing is pulled), with the image ID the store recorded."""
    for image in images:
        done = docker.run("image", "inspect", "--format", "{{.Id}}", image.reference, check=False)
        if done.returncode != 0:
            raise DeployError(
                f"{image.service}: image {image.reference} is not in the docker daemon (it would be pulled)",
                hint="load it from the bundle: `airlock install DIR --docker` (or --registry, then pull it there)",
            )
        found = done.stdout.strip()
        if image.image_id is not None and found != image.image_id:
            raise DeployError(
                f"{image.service}: the daemon's {image.reference} is {found}, not the {image.image_id} "
                "the store installed",
                hint="load the bundle's image again with `airlock install DIR --docker`; "
                "another image took its tag",
            )


def check_port(host: str, port: int) -> None:
    """The gateway's port is free here (before compose fails on it with a less clear message)."""
    bind = "0.0.0.0" if host in ("0.0.0.0", "") else host  # noqa: S104 - only a bind test
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((bind, port))
        except OSError as exc:
            raise DeployError(
                f"port {port} on {bind} is already in use ({exc.strerror})",
                hint="stop what holds it (`ss -ltnp`), or change gateway.port in the spec and render again",
            ) from None


@dataclass(frozen=True)
class ServiceState:
    service: str
    status: str  # starting | healthy | unhealthy | exited | restarting | missing
    last_line: str
    restarts: int = 0


@dataclass(frozen=True)
class UpResult:
    states: tuple[ServiceState, ...]
    elapsed_s: float
    recreated: tuple[str, ...] = field(default=())  # services whose container changed in this up


def compose_up(
    out: Path,
    docker: Docker,
    *,
    monitoring: bool = False,
    on_state: Callable[[Sequence[ServiceState]], None] | None = None,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> UpResult:
    """``docker-compose up -d`` after the checks, then follow until every engine and the gateway are
    healthy; a container that exits, restarts or turns unhealthy stops it with its log tail and a fix."""
    document = _load_compose(out)
    services = list(document["services"])
    active = [
        s for s in services if monitoring or MONITORING not in document["services"][s].get("profiles", [])
    ]
    images = _images_of(document, active)
    check_daemon(docker)
    check_images(docker, images)
    before = _container_ids(docker, out, active)
    if not before.get("gateway"):
        gateway = document["services"]["gateway"]["ports"][0]
        host, port = gateway.rsplit(":", 2)[0], int(gateway.rsplit(":", 2)[1])
        check_port(host, port)
    if monitoring:
        ensure_metrics_key(out, docker)
    args = ["--profile", MONITORING] if monitoring else []
    docker.compose_run(out, *args, "up", "-d", "--remove-orphans")
    after = _container_ids(docker, out, active)
    recreated = tuple(s for s in active if after.get(s) != before.get(s))
    start = clock()
    budget = _budget(document, active)
    while True:
        states = [_state(docker, s, after.get(s)) for s in active]
        if on_state is not None:
            on_state(states)
        bad = [s for s in states if s.status in ("exited", "unhealthy", "missing") or s.restarts > 0]
        if bad:
            raise _failed(docker, bad[0], after.get(bad[0].service))
        if all(s.status in ("healthy", "running") for s in states):
            return UpResult(tuple(states), clock() - start, recreated)
        if clock() - start > budget:
            waiting = [s for s in states if s.status != "healthy"]
            raise _failed(docker, waiting[0], after.get(waiting[0].service), timed_out=budget)
        sleep(poll_s)


def compose_down(out: Path, docker: Docker, *, volumes: bool = False) -> None:
    """Stop and remove the containers and networks (the state volume stays unless ``volumes``)."""
    _load_compose(out)
    check_daemon(docker)
    docker.compose_run(out, "--profile", MONITORING, "down", "--remove-orphans", *(["-v"] if volumes else []))


def ensure_metrics_key(out: Path, docker: Docker) -> Path:
    """A key for Prometheus that opens /metrics only (scope ``metrics``), made once in the state volume
    and kept in monitoring/ (mode 0644 in a folder only root enters: the container's user reads it
    through its bind mount)."""
    path = out / PROMETHEUS_KEY_FILE
    if path.is_file() and path.read_text().strip():
        return path
    argv = (
        "run",
        "--rm",
        "--no-deps",
        "gateway",
        "keys",
        "create",
        "prometheus",
        "--scope",
        "metrics",
        "--quiet",
    )
    done = docker.compose_run(out, *argv)
    token = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if not token:
        raise DeployError("could not create Prometheus's key in the gateway", hint=_tail(done.stderr, 4))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    write_atomic(path, token.encode() + b"\n", mode=0o644)
    return path


def create_key(out: Path, docker: Docker, name: str) -> str:
    """An API key made in the gateway's state volume (``airlock keys create NAME --quiet`` in its image)."""
    done = docker.compose_run(out, "run", "--rm", "--no-deps", "gateway", "keys", "create", name, "--quiet")
    return done.stdout.strip().splitlines()[-1]


def _load_compose(out: Path) -> dict[str, Any]:
    path = out / COMPOSE_FILE
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeployError(
            f"{path} does not exist", hint="render it first: airlock deploy compose SPEC --out DIR"
        ) from None
    if not isinstance(loaded, dict) or "gateway" not in loaded.get("services", {}):
        raise DeployError(f"{path} is not a file airlock deploy compose rendered", hint="render it again")
    return loaded


def _images_of(document: Mapping[str, Any], services: Sequence[str]) -> list[Image]:
    """The images to check, each with the image ID the store recorded (from the rendered labels)."""
    ids: Mapping[str, str] = document.get("x-airlock-image-ids") or {}
    out = []
    for name in services:
        reference = document["services"][name]["image"]
        out.append(Image(name, reference, ids.get(reference)))
    return out


def _container_ids(docker: Docker, out: Path, services: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for service in services:
        done = docker.compose_run(out, "ps", "-q", service, check=False)
        cid = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else ""
        if cid:
            found[service] = cid
    return found


def _budget(document: Mapping[str, Any], services: Sequence[str]) -> float:
    """How long to follow: the longest start period, and a minute more for the first probes."""
    periods = [
        int(str(document["services"][s].get("healthcheck", {}).get("start_period", "0s")).rstrip("s") or 0)
        for s in services
    ]
    return float(max(periods, default=0) + 60)


def _state(docker: Docker, service: str, cid: str | None) -> ServiceState:
    if cid is None:
        return ServiceState(service, "missing", "")
    done = docker.run("inspect", "--format", "{{json .State}}|{{.RestartCount}}", cid, check=False)
    if done.returncode != 0:
        return ServiceState(service, "missing", "")
    raw, _, count = done.stdout.strip().rpartition("|")
    state = json.loads(raw)
    health = (state.get("Health") or {}).get("Status")
    status = state.get("Status", "unknown")
    if status == "running" and health:
        status = health
    logs = docker.run("logs", "--tail", "1", cid, check=False)
    line = _tail(logs.stdout + logs.stderr, 1)
    return ServiceState(service, status, line, int(count or 0))


def _failed(
    docker: Docker, state: ServiceState, cid: str | None, *, timed_out: float | None = None
) -> DeployError:
    logs = docker.run("logs", "--tail", "30", cid, check=False) if cid else None
    tail = _tail((logs.stdout + logs.stderr) if logs else "", 30)
    why = (
        f"not healthy after {timed_out:.0f} s (status {state.status})"
        if timed_out is not None
        else f"{state.status}" + (f" after {state.restarts} restarts" if state.restarts else "")
    )
    return DeployError(f"{state.service}: {why}; its last log lines:\n{tail}", hint=_fix_for(tail))
