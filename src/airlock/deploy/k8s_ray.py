"""An engine spread over several nodes: vLLM's Ray executor on a KubeRay RayCluster (``ray.io/v1``).

Tensor parallelism stays inside a node (it all-reduces every layer), pipeline parallelism crosses
nodes (one activation hand-off per stage): an engine whose ``tp x pp`` GPUs do not fit on one node of
``gpus_per_node`` is split into ``nodes`` groups of whole pipeline stages. The RayCluster's head is one
of those nodes; its container starts Ray (KubeRay's generated ``ray start``), waits until every node's
GPUs have joined, then runs vLLM's OpenAI server with ``--distributed-executor-backend ray``, so vLLM
places its workers on the cluster. The workers are a group of ``nodes - 1`` pods of the same image.

KubeRay writes the ``ray start`` command itself; the annotation ``ray.io/overwrite-container-cmd``
hands the container's command back to us, and KubeRay passes its command in
``$KUBERAY_GEN_RAY_START_CMD`` (KubeRay >= 1.1). No field here is newer than KubeRay 1.1.

Example::

    split = ray_split(engine, gpus_per_node=2)   # tp 2, pp 2 -> RaySplit(nodes=2, gpus_per_node=2)
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from airlock.deploy.model import EngineService
from airlock.errors import DeployError

#: vLLM's executor flag, and the value that runs its workers as Ray actors.
EXECUTOR_FLAG = "--distributed-executor-backend"
#: KubeRay: the RayCluster name's limit (its head Service adds "-head-svc"), and its labels.
MAX_CLUSTER_NAME = 53
CLUSTER_LABEL = "ray.io/cluster"
NODE_TYPE_LABEL = "ray.io/node-type"
OVERWRITE_CMD = "ray.io/overwrite-container-cmd"
#: Ray's own ports on the head (GCS, dashboard, client); vLLM's server is the engine's port.
RAY_PORTS = {"gcs": 6379, "dashboard": 8265, "client": 10001}


@dataclass(frozen=True)
class RaySplit:
    """How an engine's GPUs are laid over nodes: ``nodes`` pods of ``gpus_per_node`` GPUs each."""

    nodes: int
    gpus_per_node: int
    tp: int
    pp: int


def flag_value(argv: tuple[str, ...], flag: str) -> str | None:
    """The value given to ``flag`` in an argv (``--flag value`` or ``--flag=value``); the last wins."""
    found = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
    return found


def _size(engine: EngineService, flag: str) -> int:
    value = flag_value(engine.command, flag)
    try:
        return int(value) if value is not None else 1
    except ValueError:
        raise DeployError(f"{engine.name}: {flag} {value!r} is not a number") from None


def ray_split(engine: EngineService, gpus_per_node: int | None) -> RaySplit | None:
    """None when the engine fits on one node (or the node size is not known); else how it splits.

    The engine's GPUs are plan's ``tp x pp``. Each node takes ``tp x k`` GPUs, ``k`` the largest number
    of pipeline stages that fits on one node and divides ``pp`` evenly."""
    if gpus_per_node is None or engine.kind != "vllm" or engine.gpus <= gpus_per_node:
        return None
    tp = _size(engine, "--tensor-parallel-size")
    pp = _size(engine, "--pipeline-parallel-size")
    if tp > gpus_per_node:
        raise DeployError(
            f"{engine.name}: tensor parallel {tp} does not fit on a node of {gpus_per_node} GPUs "
            "(tensor parallelism stays inside a node)",
            hint="plan it with a smaller --tensor-parallel-size and a --pipeline-parallel-size over nodes",
        )
    if tp * pp != engine.gpus:
        raise DeployError(
            f"{engine.name}: takes {engine.gpus} GPUs but its tensor x pipeline parallel size is {tp} x {pp}",
            hint="set tensor_parallel_size and pipeline_parallel_size in the spec's engine section",
        )
    stages = max(k for k in range(1, pp + 1) if pp % k == 0 and tp * k <= gpus_per_node)
    return RaySplit(nodes=pp // stages, gpus_per_node=tp * stages, tp=tp, pp=pp)


def cluster_name(engine: EngineService) -> str:
    """The RayCluster's name: the engine's, cut to KubeRay's limit."""
    return engine.name[:MAX_CLUSTER_NAME].rstrip("-")


def ray_command(engine: EngineService) -> tuple[str, ...]:
    """The engine's vLLM arguments with the Ray executor (added when plan's arguments lack it)."""
    backend = flag_value(engine.command, EXECUTOR_FLAG)
    if backend is None:
        return (*engine.command, EXECUTOR_FLAG, "ray")
    if backend != "ray":
        raise DeployError(
            f"{engine.name}: {EXECUTOR_FLAG} {backend} cannot span nodes",
            hint=f"remove {EXECUTOR_FLAG} from the spec's args (deploy sets ray for an engine over nodes)",
        )
    return engine.command


def gpu_wait(total: int) -> str:
    """Python, run on the head: connect to its Ray and return once the cluster has ``total`` GPUs."""
    return (
        "import time\n"
        "import ray\n"
        'ray.init(address="auto", logging_level="ERROR")\n'
        f'while ray.cluster_resources().get("GPU", 0) < {total}:\n'
        "    time.sleep(5)\n"
    )


def head_script(engine: EngineService, split: RaySplit) -> str:
    """The head container's shell: Ray in the background, every node's GPUs awaited, then vLLM in front.

    ``exec`` makes vLLM the container's main process: when it exits the pod restarts; when Ray dies
    vLLM's next call to it fails and does the same."""
    total = split.nodes * split.gpus_per_node
    vllm = shlex.join(("python3", "-m", "vllm.entrypoints.openai.api_server", *ray_command(engine)))
    return "\n".join(
        (
            "set -eu",
            "ulimit -n 65536 || true",
            "$KUBERAY_GEN_RAY_START_CMD &",
            f"until ray health-check --address 127.0.0.1:{RAY_PORTS['gcs']} >/dev/null 2>&1; do sleep 2; done",
            f"echo 'airlock: waiting for {total} GPUs on {split.nodes} Ray nodes'",
            f"python3 -c {shlex.quote(gpu_wait(total))}",
            f"exec {vllm}",
        )
    )


WORKER_SCRIPT = "ulimit -n 65536 || true; exec $KUBERAY_GEN_RAY_START_CMD"


def _rest(container: dict[str, Any]) -> dict[str, Any]:
    """A container's fields but those the RayCluster sets itself."""
    return {k: v for k, v in container.items() if k not in ("name", "command", "args", "ports")}


def ray_cluster(
    engine: EngineService,
    split: RaySplit,
    *,
    metadata: dict[str, Any],
    pod_labels: dict[str, str],
    head: dict[str, Any],
    worker: dict[str, Any],
) -> dict[str, Any]:
    """The RayCluster object. ``head`` and ``worker`` are pod specs whose first container is Ray's
    (image, environment, GPUs, mounts, probes set by the caller); this adds the commands and ports."""
    head_container = {
        "name": "ray-head",
        **_rest(head["containers"][0]),
        "command": ["/bin/bash", "-c", "--"],
        "args": [head_script(engine, split)],
        "ports": [
            {"name": "http", "containerPort": engine.port, "protocol": "TCP"},
            *({"name": n, "containerPort": p, "protocol": "TCP"} for n, p in RAY_PORTS.items()),
        ],
    }
    worker_container = {
        "name": "ray-worker",
        **_rest(worker["containers"][0]),
        "command": ["/bin/bash", "-c", "--"],
        "args": [WORKER_SCRIPT],
    }
    workers = split.nodes - 1
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {**metadata, "annotations": {OVERWRITE_CMD: "true"}},
        "spec": {
            "headGroupSpec": {
                "rayStartParams": {},  # required by KubeRay before 1.2; resources come from the limits
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {**head, "containers": [head_container]},
                },
            },
            "workerGroupSpecs": [
                {
                    "groupName": "gpu",
                    "replicas": workers,
                    "minReplicas": workers,
                    "maxReplicas": workers,
                    "rayStartParams": {},
                    "template": {
                        "metadata": {"labels": pod_labels},
                        "spec": {**worker, "containers": [worker_container]},
                    },
                }
            ],
        },
    }
