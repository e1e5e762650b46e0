"""``airlock deploy k8s``: a :class:`~airlock.deploy.model.Deployment` as Kubernetes manifests, kustomize-ready.

One folder, ``kubectl apply -k DIR`` (or ``-f DIR``)::

    kustomization.yaml   the files below, in order, and the namespace
    namespace.yaml       the namespace (Pod Security "restricted" enforced when no engine runs as root)
    store.yaml           the model store's PersistentVolumeClaim (ReadOnlyMany), unless --store-claim
                         or --store-host-path names one the site already has
    secret.yaml          the engines' internal API key (mode 0600; kept when the folder is rendered again)
    network-policy.yaml  deny everything; DNS for every pod; the gateway takes ingress and reaches the
                         engines; the engines take ingress from the gateway only; Ray pods of one
                         cluster talk to each other
    gateway.yaml         its airlock.yaml (ConfigMap), its state (keys.db, the audit log: a PVC), the
                         Deployment and the Service
    engine-<name>.yaml   per engine a Deployment and a ClusterIP Service, or for an engine spread over
                         several nodes a KubeRay RayCluster and a Service in front of its head (k8s_ray.py)

Every image is pinned by digest (a tag is refused: a cluster pulls from the internal registry) with
``imagePullPolicy: IfNotPresent``; every container drops all capabilities, forbids privilege
escalation, runs on a read-only root file system with ``/tmp`` (its HOME and caches) on an emptyDir,
and runs as airlock's uid 10001 (vLLM too, unless ``vllm_as_root``). Probes use the engine's health
route; the startup probe allows the model's load time (``startup_s``). Resource requests come from the
plan: memory (with a margin for the runtime) and CPUs; GPUs as ``nvidia.com/gpu`` limits.

The objects are plain dicts, not typed models: the tests check every one against the Kubernetes
OpenAPI schemas of the oldest and newest versions supported (kubernetes-validate) and the RayCluster
against KubeRay's CRD schema, which a hand-copied model of those APIs would only duplicate.

Example::

    result = write_k8s(build_deployment(DeployOptions(spec=Path("airlock.yaml"))), K8sOptions(out=Path("k8s")))
    result.files        # ('namespace.yaml', 'store.yaml', ..., 'kustomization.yaml')
"""

from __future__ import annotations

import math
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from airlock.common.fileio import write_atomic
from airlock.deploy.k8s_ray import CLUSTER_LABEL, NODE_TYPE_LABEL, cluster_name, ray_cluster
from airlock.deploy.model import RUN_UID, STORE_MOUNT, Deployment, EngineService, Mount
from airlock.deploy.multinode import RaySplit, ray_split
from airlock.errors import ConfigError, DeployError

Obj = dict[str, Any]

GIB = 1024**3
MIB = 1024**2
#: Kubernetes versions the manifests are checked against (tests/unit/deploy/test_k8s.py).
OLDEST_K8S = "1.27"
NEWEST_K8S = "1.37"
#: The secret's key that holds the engines' internal API key.
SECRET_KEY = "engine-key"  # noqa: S105 - the key's name, not its value
#: The runtime's memory beyond plan's figure (llama-server's or vLLM's own process, buffers).
RUNTIME_MARGIN = 512 * MIB
#: vLLM's shared memory (NCCL, its workers' queues) when the deployment gives none.
DEFAULT_SHM = 2 * GIB
GATEWAY_CACHE = "/var/cache/airlock"
#: An emptyDir in every container (the root file system is read-only): HOME and caches.
TMP = "/tmp"  # noqa: S108 - the container's own emptyDir
GPU_RESOURCE = "nvidia.com/gpu"
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class Toleration:
    """A node taint the engines' pods accept: ``key[=value]:Effect`` on the command line."""

    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    def manifest(self) -> Obj:
        out: Obj = {"key": self.key, "operator": "Equal" if self.value is not None else "Exists"}
        if self.value is not None:
            out["value"] = self.value
        if self.effect is not None:
            out["effect"] = self.effect
        return out


@dataclass(frozen=True)
class K8sOptions:
    out: Path
    namespace: str | None = None  # default: the deployment's name
    store_claim: str | None = None  # an existing ReadOnlyMany claim holding the store (none rendered)
    store_size: int | None = None  # the rendered claim's request (default: the store's bytes, in GiB)
    storage_class: str | None = None  # the store claim's class (default: the cluster's default)
    store_host_path: str | None = None  # the store at this path on every engine node instead of a claim
    state_size: int = GIB  # the gateway's keys.db and audit log
    state_storage_class: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)  # where engines run
    tolerations: tuple[Toleration, ...] = ()  # taints the engines accept (GPU pods also nvidia.com/gpu)
    gpus_per_node: int | None = None  # an engine needing more GPUs spans nodes on Ray (KubeRay)
    gateway_service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    vllm_as_root: bool = False  # run vLLM's image as root (its default user) instead of uid 10001
    dns_namespace: str = "kube-system"  # where the cluster's DNS pods run (the egress the policy allows)
    dns_labels: Mapping[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})


@dataclass(frozen=True)
class K8sResult:
    out: Path
    namespace: str
    files: tuple[str, ...]  # in kustomization.yaml's order
    objects: tuple[Obj, ...]  # every object rendered, in file order
    ray_clusters: tuple[str, ...]  # engines spread over nodes
    secret_kept: bool  # the engine key of an earlier render was kept
    warnings: tuple[str, ...]


def parse_toleration(text: str) -> Toleration:
    """``key``, ``key:Effect``, ``key=value`` or ``key=value:Effect`` (as ``kubectl taint`` writes them)."""
    head, _, effect = text.partition(":")
    key, eq, value = head.partition("=")
    if not key or not _LABEL_KEY.match(key) or (eq and not _LABEL_VALUE.match(value)):
        raise ConfigError(
            f"toleration {text!r}: not key[=value][:effect]", hint="e.g. nvidia.com/gpu:NoSchedule"
        )
    if effect and effect not in _EFFECTS:
        raise ConfigError(f"toleration {text!r}: effect {effect!r} is not one of {', '.join(_EFFECTS)}")
    return Toleration(key=key, value=value if eq else None, effect=effect or None)  # type: ignore[arg-type]


def parse_labels(pairs: Iterable[str]) -> dict[str, str]:
    """``key=value`` pairs (a node selector), each key and value checked as Kubernetes labels."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise ConfigError(
                f"node selector {pair!r}: not key=value", hint="e.g. nvidia.com/gpu.present=true"
            )
        out[key] = value
    return out


# -- labels and names ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    deployment: Deployment
    options: K8sOptions
    namespace: str
    secret: str

    def meta(self, name: str, component: str, app: str) -> Obj:
        return {"name": name, "namespace": self.namespace, "labels": self.labels(component, app)}

    def labels(self, component: str, app: str) -> dict[str, str]:
        return {
            **self.selector(app),
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "airlock",
        }

    def selector(self, app: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": self.deployment.name}


def _namespace(deployment: Deployment, options: K8sOptions) -> str:
    name = options.namespace or deployment.name.replace("_", "-")
    if not _DNS_LABEL.match(name):
        raise ConfigError(
            f"namespace {name!r} is not a DNS label (lower case letters, digits and '-', at most 63)",
            hint="name one with --namespace",
        )
    return name


# -- pieces -------------------------------------------------------------------------------------------


def _pinned(image: str, what: str) -> str:
    if not _DIGEST.search(image):
        raise DeployError(
            f"{what}: image {image} is not pinned by digest (a cluster pulls it from a registry)",
            hint="install the bundle's images into the site's registry: `airlock install DIR --registry HOST:PORT`",
        )
    return image


def _mib(n: float) -> str:
    return f"{math.ceil(n / MIB)}Mi"


def _probes(path: str, port: str, startup_s: float) -> Obj:
    """Startup allows the whole load time; then liveness restarts a hung engine, readiness takes it out."""
    get = {"httpGet": {"path": path, "port": port}}
    return {
        "startupProbe": {
            **get,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": max(1, math.ceil(startup_s / 10)),
        },
        "readinessProbe": {**get, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**get, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
    }


def _security(uid: int | None) -> Obj:
    """The container's: nothing gained, nothing written outside its volumes, non-root where it can."""
    out: Obj = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if uid is not None:
        out.update(runAsNonRoot=True, runAsUser=uid, runAsGroup=uid)
    return out


def _writable_env() -> list[Obj]:
    """HOME and the caches on the /tmp emptyDir (the root file system is read-only)."""
    return [
        {"name": "HOME", "value": f"{TMP}/home"},
        {"name": "XDG_CACHE_HOME", "value": f"{TMP}/cache"},
    ]


def _engine_uid(engine: EngineService, options: K8sOptions) -> int | None:
    return None if engine.kind == "vllm" and options.vllm_as_root else RUN_UID


def _resources(engine: EngineService, gpus: int) -> Obj:
    """Plan's memory (plus the runtime's margin) requested and, with a quarter more, the limit; CPUs
    requested, not limited (a CPU limit throttles token generation); GPUs as limits."""
    requests: Obj = {}
    limits: Obj = {}
    if engine.memory_bytes:
        requests["memory"] = _mib(engine.memory_bytes + RUNTIME_MARGIN)
        limits["memory"] = _mib((engine.memory_bytes + RUNTIME_MARGIN) * 5 / 4)
    if engine.cpus:
        requests["cpu"] = f"{math.ceil(engine.cpus * 1000)}m"
    if gpus:
        limits[GPU_RESOURCE] = gpus
    out: Obj = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _store_volume(ctx: _Ctx) -> Obj:
    if ctx.options.store_host_path is not None:
        return {"name": "store", "hostPath": {"path": ctx.options.store_host_path, "type": "Directory"}}
    return {"name": "store", "persistentVolumeClaim": {"claimName": _store_claim(ctx), "readOnly": True}}


def _store_claim(ctx: _Ctx) -> str:
    return ctx.options.store_claim or f"{ctx.deployment.name.replace('_', '-')}-store"[:63]


def _mount_volumes(ctx: _Ctx, engine: EngineService) -> tuple[list[Obj], list[Obj]]:
    """The engine's read-only mounts as volumes: the store's claim (or host path); a model outside the
    store only as a host path, for a claim holds nothing but the store."""
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    for i, mount in enumerate(engine.mounts):
        if _is_store(mount, ctx.deployment.store):
            volume = _store_volume(ctx)
        elif ctx.options.store_host_path is not None:
            kind = "File" if mount.source.is_file() else "Directory"
            volume = {"name": f"model-{i}", "hostPath": {"path": str(mount.source), "type": kind}}
        else:
            raise DeployError(
                f"{engine.name}: its model {mount.source} is outside the store {ctx.deployment.store}; "
                "the cluster mounts only the store's claim",
                hint="pack the model and install it into the store, or mount host paths with --store-host-path",
            )
        if volume["name"] not in {v["name"] for v in volumes}:
            volumes.append(volume)
        mounts.append({"name": volume["name"], "mountPath": mount.target, "readOnly": True})
    return volumes, mounts


def _is_store(mount: Mount, store: Path) -> bool:
    return mount.target == STORE_MOUNT or mount.source.absolute() == store.absolute()


def _engine_pod(ctx: _Ctx, engine: EngineService, gpus: int) -> Obj:
    """The pod spec of one engine (or one Ray node of it): its container first."""
    volumes, mounts = _mount_volumes(ctx, engine)
    shm = engine.shm_bytes or DEFAULT_SHM
    volumes += [
        {"name": "tmp", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": _mib(shm)}},
    ]
    mounts += [{"name": "tmp", "mountPath": TMP}, {"name": "shm", "mountPath": "/dev/shm"}]  # noqa: S108 - shared memory, sized
    env = [
        *({"name": k, "value": v} for k, v in sorted(engine.env.items())),
        *_writable_env(),
        {"name": engine.api_key_env, "valueFrom": {"secretKeyRef": {"name": ctx.secret, "key": SECRET_KEY}}},
    ]
    container: Obj = {
        "name": "engine",
        "image": _pinned(engine.image, engine.name),
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "ports": [{"name": "http", "containerPort": engine.port, "protocol": "TCP"}],
        "resources": _resources(engine, gpus),
        "volumeMounts": mounts,
        "securityContext": _security(_engine_uid(engine, ctx.options)),
        **_probes(engine.health_path, "http", engine.startup_s),
    }
    if engine.entrypoint:
        container["command"] = list(engine.entrypoint)
    if engine.command:
        container["args"] = list(engine.command)
    pod: Obj = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if ctx.options.node_selector:
        pod["nodeSelector"] = dict(ctx.options.node_selector)
    tolerations = [t.manifest() for t in ctx.options.tolerations]
    if gpus:
        tolerations.append(Toleration(GPU_RESOURCE, effect="NoSchedule").manifest())
    if tolerations:
        pod["tolerations"] = tolerations
    return pod


def _service(ctx: _Ctx, name: str, component: str, selector: Mapping[str, str], port: int, kind: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.meta(name, component, name),
        "spec": {
            "type": kind,
            "selector": dict(selector),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _engine_objects(ctx: _Ctx, engine: EngineService, split: RaySplit | None) -> list[Obj]:
    if split is not None:
        return _ray_objects(ctx, engine, split)
    pod = _engine_pod(ctx, engine, engine.gpus)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": ctx.meta(engine.name, "engine", engine.name),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # a second copy would need the GPUs (and memory) twice
            "selector": {"matchLabels": ctx.selector(engine.name)},
            "template": {"metadata": {"labels": ctx.labels("engine", engine.name)}, "spec": pod},
        },
    }
    return [
        deployment,
        _service(ctx, engine.name, "engine", ctx.selector(engine.name), engine.port, "ClusterIP"),
    ]


def _ray_objects(ctx: _Ctx, engine: EngineService, split: RaySplit) -> list[Obj]:
    name = cluster_name(engine)
    pod = _engine_pod(ctx, engine, split.gpus_per_node)
    worker = {**pod, "containers": [_worker_container(pod["containers"][0], engine)]}
    cluster = ray_cluster(
        engine,
        split,
        metadata=ctx.meta(name, "engine", engine.name),
        pod_labels=ctx.labels("engine", engine.name),
        head=pod,
        worker=worker,
    )
    head = {CLUSTER_LABEL: name, NODE_TYPE_LABEL: "head"}
    return [cluster, _service(ctx, engine.name, "engine", head, engine.port, "ClusterIP")]


def _worker_container(container: Obj, engine: EngineService) -> Obj:
    """A Ray worker serves no HTTP: no ports, no key, and KubeRay gives it Ray's own health probes."""
    out = {k: v for k, v in container.items() if not k.endswith("Probe") and k != "ports"}
    out["env"] = [e for e in container["env"] if e["name"] != engine.api_key_env]
    return out


def _gateway_objects(ctx: _Ctx) -> list[Obj]:
    gateway = ctx.deployment.gateway
    name = "gateway"
    config = f"{name}-config"
    state = f"{name}-state"
    spec_dir, spec_file = gateway.spec_path.rsplit("/", 1)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": ctx.meta(config, "gateway", name),
        "data": {spec_file: gateway.spec_yaml},
    }
    claim = _claim(
        ctx, state, "gateway", name, "ReadWriteOnce", ctx.options.state_size, ctx.options.state_storage_class
    )
    container: Obj = {
        "name": "gateway",
        "image": _pinned(gateway.image, "the gateway"),
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "serve",
            "--config",
            gateway.spec_path,
            "--host",
            "0.0.0.0",  # noqa: S104 - every interface of the pod's own network namespace
            "--port",
            str(gateway.container_port),
        ],
        "env": [
            {
                "name": ctx.deployment.engine_key_env,
                "valueFrom": {"secretKeyRef": {"name": ctx.secret, "key": SECRET_KEY}},
            },
        ],
        "ports": [{"name": "http", "containerPort": gateway.container_port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": [
            {"name": "config", "mountPath": spec_dir, "readOnly": True},
            {"name": "state", "mountPath": gateway.state_dir},
            {"name": "cache", "mountPath": GATEWAY_CACHE},
            {"name": "tmp", "mountPath": TMP},
        ],
        "securityContext": _security(RUN_UID),
        # /health answers while engines load; /ready waits for all of them (one engine down would
        # take the whole gateway out of its Service)
        **_probes("/health", "http", 60),
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": ctx.meta(name, "gateway", name),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # keys.db is SQLite on a ReadWriteOnce claim: one writer
            "selector": {"matchLabels": ctx.selector(name)},
            "template": {
                "metadata": {"labels": ctx.labels("gateway", name)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"fsGroup": RUN_UID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": config}},
                        {"name": "state", "persistentVolumeClaim": {"claimName": state}},
                        {"name": "cache", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    service = _service(
        ctx, name, "gateway", ctx.selector(name), gateway.port, ctx.options.gateway_service_type
    )
    return [configmap, claim, deployment, service]


def _claim(
    ctx: _Ctx, name: str, component: str, app: str, mode: str, size: int, storage_class: str | None
) -> Obj:
    spec: Obj = {
        "accessModes": [mode],
        "resources": {"requests": {"storage": f"{max(1, math.ceil(size / GIB))}Gi"}},
    }
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": ctx.meta(name, component, app),
        "spec": spec,
    }


def store_bytes(store: Path) -> int:
    """The store's bytes on disk (links not followed): the claim's default size."""
    total = 0
    for root, _dirs, files in os.walk(store):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                continue
    return total


def _network_policies(ctx: _Ctx, engines: list[tuple[EngineService, RaySplit | None]]) -> list[Obj]:
    """Nothing in or out but: DNS; anyone to the gateway; the gateway to the engines; Ray inside a cluster."""
    gateway = ctx.selector("gateway")
    engine_pods = {"app.kubernetes.io/instance": ctx.deployment.name, "app.kubernetes.io/component": "engine"}
    engine_ports = [{"protocol": "TCP", "port": p} for p in sorted({e.port for e, _ in engines})]

    def policy(name: str, selector: Mapping[str, str], spec: Obj) -> Obj:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": ctx.meta(name, "network-policy", name),
            "spec": {"podSelector": {"matchLabels": dict(selector)} if selector else {}, **spec},
        }

    dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ctx.options.dns_namespace}}}
    if ctx.options.dns_labels:
        dns["podSelector"] = {"matchLabels": dict(ctx.options.dns_labels)}
    out = [
        policy("default-deny", {}, {"policyTypes": ["Ingress", "Egress"]}),
        policy(
            "allow-dns",
            {},
            {
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [dns], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
                ],
            },
        ),
        policy(
            "gateway",
            gateway,
            {
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"ports": [{"protocol": "TCP", "port": ctx.deployment.gateway.container_port}]}],
                "egress": [{"to": [{"podSelector": {"matchLabels": engine_pods}}], "ports": engine_ports}]
                if engines
                else [],
            },
        ),
    ]
    if engines:
        out.append(
            policy(
                "engines",
                engine_pods,
                {
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": gateway}}], "ports": engine_ports}],
                },
            )
        )
    for engine, split in engines:
        if split is None:
            continue
        peers = [{"podSelector": {"matchLabels": {CLUSTER_LABEL: cluster_name(engine)}}}]
        out.append(
            policy(
                f"ray-{cluster_name(engine)}"[:63].rstrip("-"),
                {CLUSTER_LABEL: cluster_name(engine)},
                {
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": peers}],
                    "egress": [{"to": peers}],
                },
            )
        )
    return out


# -- the whole ---------------------------------------------------------------------------------------


def _pod_security(deployment: Deployment, options: K8sOptions) -> str:
    """The Pod Security level the namespace enforces: restricted, unless a host path (privileged
    only) or vLLM as root (baseline) needs less."""
    if options.store_host_path is not None:
        return "privileged"
    if options.vllm_as_root and any(e.kind == "vllm" for e in deployment.engines):
        return "baseline"
    return "restricted"


def render_k8s(deployment: Deployment, options: K8sOptions, *, engine_key: str) -> dict[str, list[Obj]]:
    """Every file's objects by file name, in the order they are applied (no kustomization, no I/O but
    the store's size when a claim is rendered without one)."""
    namespace = _namespace(deployment, options)
    ctx = _Ctx(deployment, options, namespace, secret=f"{deployment.name.replace('_', '-')}-engine-key"[:63])
    engines = [(e, ray_split(e, options.gpus_per_node)) for e in deployment.engines]
    level = _pod_security(deployment, options)
    files: dict[str, list[Obj]] = {
        "namespace.yaml": [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": namespace,
                    "labels": {
                        **ctx.selector("airlock"),
                        "pod-security.kubernetes.io/enforce": level,
                        "pod-security.kubernetes.io/warn": "restricted",
                    },
                },
            }
        ]
    }
    if options.store_claim is None and options.store_host_path is None and any(e.mounts for e, _ in engines):
        size = options.store_size if options.store_size is not None else store_bytes(deployment.store)
        files["store.yaml"] = [
            _claim(ctx, _store_claim(ctx), "store", "store", "ReadOnlyMany", size, options.storage_class)
        ]
    files["secret.yaml"] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": ctx.meta(ctx.secret, "gateway", "gateway"),
            "type": "Opaque",
            "stringData": {SECRET_KEY: engine_key},
        }
    ]
    files["network-policy.yaml"] = _network_policies(ctx, engines)
    files["gateway.yaml"] = _gateway_objects(ctx)
    for engine, split in engines:
        files[f"{engine.name}.yaml"] = _engine_objects(ctx, engine, split)
    return files


def _earlier_key(path: Path) -> str | None:
    """The engine key of an earlier render of this folder, so that rendering again rotates nothing."""
    try:
        for doc in yaml.safe_load_all(path.read_text()):
            key = doc.get("stringData", {}).get(SECRET_KEY) if isinstance(doc, dict) else None
            if isinstance(key, str) and key:
                return key
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return None


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people and kubectl: no anchors for shared parts, scripts as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(objects: list[Obj]) -> bytes:
    docs = (yaml.dump(o, Dumper=_Dumper, sort_keys=False, width=1_000_000) for o in objects)
    return "---\n".join(docs).encode()


def write_k8s(deployment: Deployment, options: K8sOptions) -> K8sResult:
    """Render into ``options.out``: each file atomically, the Secret readable by its owner only, and the
    engine files of an earlier render that this one no longer has removed."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    kept = _earlier_key(out / "secret.yaml")
    files = render_k8s(deployment, options, engine_key=kept or secrets.token_urlsafe(32))
    namespace = files["namespace.yaml"][0]["metadata"]["name"]
    earlier = _earlier_resources(out / "kustomization.yaml")
    for name, objects in files.items():
        write_atomic(out / name, _dump(objects), mode=0o600 if name == "secret.yaml" else 0o644)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": list(files),
    }
    write_atomic(out / "kustomization.yaml", yaml.safe_dump(kustomization, sort_keys=False).encode())
    for stale in earlier - set(files):
        (out / stale).unlink(missing_ok=True)
    ray = tuple(o["metadata"]["name"] for objs in files.values() for o in objs if o["kind"] == "RayCluster")
    warnings = list(deployment.warnings)
    if any(e.gpu_ids for e in deployment.engines):
        warnings.append(
            "GPU device ids are the node's to choose on Kubernetes (the device plugin assigns them)"
        )
    return K8sResult(
        out=out,
        namespace=namespace,
        files=(*files, "kustomization.yaml"),
        objects=tuple(o for objs in files.values() for o in objs),
        ray_clusters=ray,
        secret_kept=kept is not None,
        warnings=tuple(warnings),
    )


def workload_images(obj: Obj) -> tuple[str, ...]:
    """The images a Deployment's or RayCluster's containers run, each once."""
    spec = obj["spec"]
    if obj["kind"] == "RayCluster":
        pods = [spec["headGroupSpec"]["template"], *(g["template"] for g in spec.get("workerGroupSpecs", []))]
    else:
        pods = [spec["template"]]
    return tuple(dict.fromkeys(c["image"] for p in pods for c in p["spec"]["containers"]))


def _earlier_resources(path: Path) -> set[str]:
    """The files an earlier render listed (plain names in the folder only: nothing else is removed)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return set()
    resources = data.get("resources", []) if isinstance(data, dict) else []
    return {r for r in resources if isinstance(r, str) and re.fullmatch(r"[a-z0-9][a-z0-9.-]*\.yaml", r)}
