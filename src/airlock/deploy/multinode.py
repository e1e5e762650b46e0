"""An engine over several nodes, whatever runs it (KubeRay in ``k8s_ray.py``, compose hosts in ``ray.py``).

Tensor parallelism stays inside a node (it all-reduces every layer), pipeline parallelism crosses
nodes (one activation hand-off per stage): an engine whose ``tp x pp`` GPUs do not fit on one node of
``gpus_per_node`` is split into ``nodes`` groups of whole pipeline stages, and vLLM runs its workers
as Ray actors (``--distributed-executor-backend ray``) on a Ray cluster of those nodes.

Example::

    split = ray_split(engine, gpus_per_node=2)   # tp 2, pp 2 -> RaySplit(nodes=2, gpus_per_node=2)
    ray_command(engine)                          # plan's argv + ('--distributed-executor-backend', 'ray')
"""

from __future__ import annotations

from dataclasses import dataclass

from airlock.deploy.model import EngineService
from airlock.errors import DeployError

#: vLLM's executor flag, and the value that runs its workers as Ray actors.
EXECUTOR_FLAG = "--distributed-executor-backend"


@dataclass(frozen=True)
class RaySplit:
    """How an engine's GPUs are laid over nodes: ``nodes`` nodes of ``gpus_per_node`` GPUs each."""

    nodes: int
    gpus_per_node: int
    tp: int
    pp: int

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


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
