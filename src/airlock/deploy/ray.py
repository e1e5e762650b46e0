"""``airlock deploy compose --gpus-per-node N``: an engine larger than one host, on a Ray cluster of compose hosts.

When plan's ``tp x pp`` GPUs for a vLLM engine do not fit on one host of N GPUs, the engine is split
as for Kubernetes (:func:`~airlock.deploy.multinode.ray_split`: tensor parallel inside a host, whole
pipeline stages per host) and rendered as two compose folders:

* ``head/``: the compose file ``deploy compose`` renders for one host (the gateway, any engine that
  fits, the state volume), where the split engine's service becomes the Ray head. Its container starts
  Ray, waits until every host's GPUs have joined, then runs vLLM's OpenAI server with
  ``--distributed-executor-backend ray`` (vLLM places one worker per GPU on the cluster). The gateway
  reaches it at ``host.docker.internal`` (``host-gateway``); nothing else about the gateway changes.
* ``worker/``: one compose file for every other host: a Ray worker joining ``AIRLOCK_HEAD_ADDRESS``.

Ray and NCCL connect hosts to each other on ports picked at run time, so the Ray containers use the
host's network (``network_mode: host``). Ray's ports are pinned where Ray allows it (``RAY_PORTS``) so a
firewall can keep them between the hosts; Ray's token authentication (``RAY_AUTH_MODE=token``, Ray 2.52
and newer) refuses a process without the token that ``.env`` carries, identical on every host.

On air-gapped hosts without a default route neither Ray nor vLLM can guess their own address (both ask
the kernel for the route to a public address), so each host's ``.env`` names it: the head's
``AIRLOCK_HEAD_ADDRESS``, each worker's ``AIRLOCK_NODE_ADDRESS``. Compose refuses to start without them.

Example::

    rendered = render_ray_compose(ComposeOptions(deploy=..., out=Path("site")), RayOptions(gpus_per_node=8))
    rendered.head.compose_file   # site/head/docker-compose.yml (on the head host: deploy compose --up)
    rendered.worker_file         # site/worker/docker-compose.yml (copied to each other host)
"""

from __future__ import annotations

import hashlib
import secrets
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from airlock.common.fileio import write_atomic
from airlock.deploy.compose import (
    COMPOSE_FILE,
    ENV_FILE,
    GATEWAY_SPEC_FILE,
    HEALTH_INTERVAL_S,
    ComposeOptions,
    Rendered,
    read_env,
    render_compose,
)
from airlock.deploy.model import ENGINE_KEY_ENV, STORE_MOUNT, EngineService, build_deployment
from airlock.deploy.multinode import RaySplit, gpu_wait, ray_command, ray_split
from airlock.errors import DeployError

HEAD_DIR = "head"
WORKER_DIR = "worker"
#: The variables each host's .env sets (the head's address on the hosts' network; this host's own).
HEAD_ADDRESS_ENV = "AIRLOCK_HEAD_ADDRESS"
NODE_ADDRESS_ENV = "AIRLOCK_NODE_ADDRESS"
#: Ray's shared secret (the same on every host), and the network interface NCCL and Gloo should use.
RAY_TOKEN_ENV = "AIRLOCK_RAY_TOKEN"  # noqa: S105 - the variable's name, not a token
INTERFACE_ENV = "AIRLOCK_NODE_INTERFACE"
#: Where a worker host keeps the store (default: the head's path).
STORE_ENV = "AIRLOCK_STORE"
#: Ray's ports on each host: the head's GCS, then each node's own services; workers take 10002-19999.
RAY_PORTS = {
    "--port": 6379,
    "--node-manager-port": 6380,
    "--object-manager-port": 6381,
    "--runtime-env-agent-port": 6382,
    "--metrics-export-port": 6383,
    "--dashboard-agent-grpc-port": 6384,
    "--dashboard-agent-listen-port": 6385,
}
WORKER_PORTS = (10002, 19999)
#: The name the gateway's container reaches the head host by.
HOST_ALIAS = "host.docker.internal"
#: The probe inside a container (python3 is in vLLM's image, curl is not).
_PROBE = "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)"


@dataclass(frozen=True)
class RayOptions:
    gpus_per_node: int
    head_address: str | None = None  # the head host's address on the hosts' network (else: fill in .env)
    engine_port: int = 8000  # vLLM's port on the head host (the host's network: pick a free one)
    interface: str | None = None  # NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME on every host (None: their choice)


@dataclass(frozen=True)
class RayRendered:
    out: Path
    head: Rendered  # the head host's compose folder (``deploy compose`` renders and runs it as ever)
    worker_file: Path | None  # None when every engine fits on one host (then head is the only folder)
    engine: str | None  # the engine on Ray
    split: RaySplit | None
    notes: tuple[str, ...]


def compose_escape(text: str) -> str:
    """A string as compose must see it to pass it on unchanged (``$`` is compose's interpolation)."""
    return text.replace("$", "$$")


def _ray_flags() -> str:
    return " ".join(f"{flag}={port}" for flag, port in RAY_PORTS.items() if flag != "--port")


def _node_env_lines(address_var: str) -> list[str]:
    """Shell lines: this node's address for vLLM and, when named, the interface for NCCL and Gloo."""
    return [
        f'export VLLM_HOST_IP="${address_var}"',
        f'if [ -n "${{{INTERFACE_ENV}:-}}" ]; then',
        f'  export NCCL_SOCKET_IFNAME="${INTERFACE_ENV}" GLOO_SOCKET_IFNAME="${INTERFACE_ENV}"',
        "fi",
    ]


def _on_port(engine: EngineService, port: int) -> list[str]:
    """The engine's vLLM arguments with the Ray executor, listening on ``port`` of the head host."""
    argv = [a for a in ray_command(engine) if not a.startswith("--port=")]
    if "--port" in argv:
        argv[argv.index("--port") + 1] = str(port)
    else:
        argv += ["--port", str(port)]
    return argv


def head_script(engine: EngineService, split: RaySplit, options: RayOptions) -> str:
    """The head container's shell: Ray's head in the background, every host's GPUs awaited, then vLLM
    (``exec``: when it exits the container restarts, and Ray with it)."""
    gcs = RAY_PORTS["--port"]
    vllm = shlex.join(
        ("python3", "-m", "vllm.entrypoints.openai.api_server", *_on_port(engine, options.engine_port))
    )
    return "\n".join(
        [
            "set -eu",
            "ulimit -n 65536 || true",
            *_node_env_lines(HEAD_ADDRESS_ENV),
            f'export RAY_ADDRESS="${HEAD_ADDRESS_ENV}:{gcs}"',
            f'ray start --head --node-ip-address="${HEAD_ADDRESS_ENV}" --port={gcs} {_ray_flags()} '
            f"--num-gpus={split.gpus_per_node} --include-dashboard=false --disable-usage-stats",
            f"echo 'airlock: waiting for {split.total_gpus} GPUs on {split.nodes} Ray nodes'",
            f"python3 -c {shlex.quote(gpu_wait(split.total_gpus))}",
            f"exec {vllm}",
        ]
    )


def worker_script(split: RaySplit) -> str:
    """A worker container's shell: Ray joining the head, in the foreground (``--block``: when Ray stops,
    the container does, and restarts to join again)."""
    gcs = RAY_PORTS["--port"]
    return "\n".join(
        [
            "set -eu",
            "ulimit -n 65536 || true",
            *_node_env_lines(NODE_ADDRESS_ENV),
            f'exec ray start --address="${HEAD_ADDRESS_ENV}:{gcs}" --node-ip-address="${NODE_ADDRESS_ENV}" '
            f"{_ray_flags()} --num-gpus={split.gpus_per_node} --disable-usage-stats --block",
        ]
    )


def ray_env(engine: EngineService) -> dict[str, str]:
    """The environment both scripts run in, as compose interpolates it from each host's .env."""
    required = "is not set: name this host's address on the hosts' network in .env"
    return {
        **engine.env,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": f"${{{RAY_TOKEN_ENV}:?is not set in .env (the same on every host)}}",
        HEAD_ADDRESS_ENV: f"${{{HEAD_ADDRESS_ENV}:?{required}}}",
        INTERFACE_ENV: f"${{{INTERFACE_ENV}:-}}",
    }


def _ray_service(engine: EngineService, split: RaySplit, script: str, role: str) -> dict[str, Any]:
    return {
        "image": engine.image,
        "pull_policy": "never",
        "entrypoint": ["/bin/bash", "-c"],
        "command": [compose_escape(script)],
        "network_mode": "host",  # Ray and NCCL connect the hosts on ports chosen at run time
        "ipc": "host",
        "ulimits": {"nofile": 65536},
        "restart": "unless-stopped",
        "deploy": {
            "resources": {
                "reservations": {
                    "devices": [{"driver": "nvidia", "count": split.gpus_per_node, "capabilities": ["gpu"]}]
                }
            }
        },
        "labels": {"io.airlock.role": role, "io.airlock.model": engine.model},
    }


def head_service(engine: EngineService, split: RaySplit, options: RayOptions) -> dict[str, Any]:
    service = _ray_service(engine, split, head_script(engine, split, options), "engine")
    service["environment"] = {**ray_env(engine), engine.api_key_env: f"${{{ENGINE_KEY_ENV}}}"}
    service["volumes"] = [f"{m.source}:{m.target}:ro" for m in engine.mounts]
    url = f"http://127.0.0.1:{options.engine_port}{engine.health_path}"
    service["healthcheck"] = {
        "test": ["CMD", "python3", "-c", _PROBE, url],
        "interval": f"{HEALTH_INTERVAL_S}s",
        "timeout": "5s",
        "retries": 3,
        "start_period": f"{int(engine.startup_s)}s",
    }
    return service


def worker_service(engine: EngineService, split: RaySplit) -> dict[str, Any]:
    service = _ray_service(engine, split, worker_script(split), "ray-worker")
    required = "is not set: name this host's address on the hosts' network in .env"
    service["environment"] = {**ray_env(engine), NODE_ADDRESS_ENV: f"${{{NODE_ADDRESS_ENV}:?{required}}}"}
    # the same model path on every host: the store at /store (AIRLOCK_STORE when it lives elsewhere here)
    service["volumes"] = [
        f"${{{STORE_ENV}:-{m.source}}}:{m.target}:ro"
        if m.target == STORE_MOUNT
        else f"{m.source}:{m.target}:ro"
        for m in engine.mounts
    ]
    return service


def render_ray_compose(options: ComposeOptions, ray: RayOptions) -> RayRendered:
    """``head/`` and ``worker/`` when an engine needs more GPUs than a host has; else the one folder
    ``deploy compose`` renders, in ``options.out``."""
    deployment = build_deployment(options.deploy)
    splits = [(e, s) for e in deployment.engines if (s := ray_split(e, ray.gpus_per_node)) is not None]
    if not splits:
        rendered = render_compose(options, deployment)
        note = f"every engine fits on a host of {ray.gpus_per_node} GPUs: one compose file, no Ray"
        return RayRendered(options.out, rendered, None, None, None, (*rendered.notes, note))
    if len(splits) > 1:
        names = ", ".join(e.name for e, _ in splits)
        raise DeployError(
            f"{names} each need more than {ray.gpus_per_node} GPUs: a head host runs one Ray cluster",
            hint="put each of these models in its own spec, and render each on its own head host",
        )
    engine, split = splits[0]
    head_dir, worker_dir = options.out / HEAD_DIR, options.out / WORKER_DIR
    old = read_env(head_dir / ENV_FILE)  # the head's Ray token survives a render (the workers have it)
    head = render_compose(replace(options, out=head_dir), deployment)
    engine = next(e for e in head.deployment.engines if e.name == engine.name)
    token = (
        old.get(RAY_TOKEN_ENV)
        or read_env(worker_dir / ENV_FILE).get(RAY_TOKEN_ENV)
        or secrets.token_urlsafe(32)
    )
    ray_vars = {
        HEAD_ADDRESS_ENV: ray.head_address or old.get(HEAD_ADDRESS_ENV, ""),
        RAY_TOKEN_ENV: token,
        INTERFACE_ENV: ray.interface or old.get(INTERFACE_ENV, ""),
    }
    _rewrite_head(head, engine, split, ray, ray_vars)
    worker_file = _write_worker(worker_dir, head, engine, split, ray_vars)
    notes = [
        *head.notes,
        f"{engine.name} runs on Ray over {split.nodes} hosts of {split.gpus_per_node} GPUs "
        f"(tensor parallel {split.tp} inside a host, pipeline parallel {split.pp}): "
        f"start {WORKER_DIR}/ on {split.nodes - 1} other host(s), then {HEAD_DIR}/ on the head",
        f"Ray's ports ({', '.join(str(p) for p in RAY_PORTS.values())}, {WORKER_PORTS[0]}-{WORKER_PORTS[1]}) "
        f"and vLLM's {ray.engine_port} listen on every interface of the hosts: let only the hosts reach them",
    ]
    if not ray_vars[HEAD_ADDRESS_ENV]:
        notes.append(f"set {HEAD_ADDRESS_ENV} in {HEAD_DIR}/.env and {WORKER_DIR}/.env (or --head-address)")
    return RayRendered(options.out, head, worker_file, engine.name, split, tuple(notes))


def _split_header(text: str) -> tuple[str, str]:
    lines = text.splitlines(keepends=True)
    n = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    return "".join(lines[:n]), "".join(lines[n:])


def _rewrite_head(
    head: Rendered, engine: EngineService, split: RaySplit, ray: RayOptions, ray_vars: dict[str, str]
) -> None:
    """The head folder: the engine's service as Ray's head, the gateway pointed at it on the host."""
    spec_path = head.out / GATEWAY_SPEC_FILE
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    for model in spec["models"]:
        if model["name"] == engine.model:
            model["engine"]["url"] = f"http://{HOST_ALIAS}:{ray.engine_port}/v1"
    spec_bytes = yaml.safe_dump(spec, sort_keys=False).encode()
    write_atomic(spec_path, spec_bytes)
    header, body = _split_header(head.compose_file.read_text(encoding="utf-8"))
    document = yaml.safe_load(body)
    services = document["services"]
    services[engine.name] = head_service(engine, split, ray)
    gateway = services["gateway"]
    gateway["extra_hosts"] = [f"{HOST_ALIAS}:host-gateway"]  # the head host, where vLLM listens
    gateway["labels"]["io.airlock.spec-sha256"] = hashlib.sha256(spec_bytes).hexdigest()
    header += (
        f"# {engine.name} is the head of a Ray cluster of {split.nodes} hosts: start ../{WORKER_DIR}/ on each "
        "other host first.\n"
    )
    write_atomic(head.compose_file, (header + yaml.safe_dump(document, sort_keys=False, width=120)).encode())
    env = {**read_env(head.out / ENV_FILE), **ray_vars}
    write_atomic(head.out / ENV_FILE, "".join(f"{k}={v}\n" for k, v in env.items()).encode(), mode=0o600)


def _write_worker(
    out: Path, head: Rendered, engine: EngineService, split: RaySplit, ray_vars: dict[str, str]
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    old = read_env(out / ENV_FILE)
    document = {
        "x-airlock-image-ids": {engine.image: engine.image_id} if engine.image_id is not None else {},
        "services": {f"{engine.name}-ray-worker": worker_service(engine, split)},
    }
    header = (
        f"# Rendered by `airlock deploy compose --gpus-per-node {split.gpus_per_node}`: a Ray worker for "
        f"{engine.name}, on each of the {split.nodes - 1} host(s) beside the head.\n"
        f"# On each host: set {NODE_ADDRESS_ENV} in .env to this host's address, then `docker-compose up -d`.\n"
    )
    path = out / COMPOSE_FILE
    write_atomic(path, (header + yaml.safe_dump(document, sort_keys=False, width=120)).encode())
    env = {
        "COMPOSE_PROJECT_NAME": f"{head.deployment.name}-worker",
        **ray_vars,
        NODE_ADDRESS_ENV: old.get(NODE_ADDRESS_ENV, ""),
        STORE_ENV: old.get(STORE_ENV, ""),
    }
    write_atomic(out / ENV_FILE, "".join(f"{k}={v}\n" for k, v in env.items()).encode(), mode=0o600)
    return path
