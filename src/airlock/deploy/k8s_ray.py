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

    split = ray_split(engine, gpus_per_node=2)   # multinode: tp 2, pp 2 -> RaySplit(nodes=2, gpus_per_node=2)
"""

from __future__ import annotations

import shlex
from typing import Any

from airlock.deploy.model import EngineService
from airlock.deploy.multinode import RaySplit, gpu_wait, ray_command

#: KubeRay: the RayCluster name's limit (its head Service adds "-head-svc"), and its labels.
MAX_CLUSTER_NAME = 53
CLUSTER_LABEL = "ray.io/cluster"
NODE_TYPE_LABEL = "ray.io/node-type"
OVERWRITE_CMD = "ray.io/overwrite-container-cmd"
#: Ray's own ports on the head (GCS, dashboard, client); vLLM's server is the engine's port.
RAY_PORTS = {"gcs": 6379, "dashboard": 8265, "client": 10001}


def cluster_name(engine: EngineService) -> str:
    """The RayCluster's name: the engine's, cut to KubeRay's limit."""
    return engine.name[:MAX_CLUSTER_NAME].rstrip("-")


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
