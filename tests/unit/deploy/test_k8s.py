"""deploy k8s: manifests for an air-gapped cluster, each checked against the Kubernetes OpenAPI schemas.

Every object is validated (kubernetes-validate, strict: an unknown field fails) for the oldest and
newest Kubernetes versions supported, a CPU llama.cpp engine and a GPU vLLM engine with TP=2 among
them; the network policy, the secret kept out of ConfigMaps and the images pinned by digest are
checked on what is rendered.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # no stubs, no py.typed
import pytest
import yaml

from airlock.deploy.k8s import (
    NEWEST_K8S,
    OLDEST_K8S,
    SECRET_KEY,
    K8sOptions,
    Toleration,
    parse_labels,
    parse_toleration,
    render_k8s,
    write_k8s,
)
from airlock.deploy.model import (
    RUN_UID,
    Deployment,
    DeployOptions,
    EngineService,
    GatewayService,
    Mount,
    build_deployment,
)
from airlock.errors import ConfigError, DeployError
from airlock.settings import Settings
from airlock.store.db import StoreDb
from airlock.store.store import Store

from .conftest import REGISTRY, SpecWriter, stored_image

STORE = Path("/srv/airlock/store")
KEY = "k-" + "x" * 40  # a recognisable engine key


def digest_ref(repo: str) -> str:
    return f"{REGISTRY}/{repo}@sha256:{hashlib.sha256(repo.encode()).hexdigest()}"


def llamacpp_engine(**kw: Any) -> EngineService:
    fields: dict[str, Any] = {
        "name": "engine-smollm2",
        "model": "smollm2",
        "kind": "llamacpp",
        "image": digest_ref("airlock"),
        "command": (
            "--model",
            "/store/gguf/tiny.gguf",
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
            "--parallel",
            "2",
        ),
        "env": {"HF_HUB_OFFLINE": "1"},
        "port": 8000,
        "health_path": "/health",
        "gpus": 0,
        "gpu_ids": (),
        "shm_bytes": 64 * 1024 * 1024,
        "model_dir": "/store/gguf/tiny.gguf",
        "startup_s": 120.0,
        "memory_bytes": 3 * 1024**3,
        "cpus": 4.0,
        "entrypoint": ("/opt/airlock/llama.cpp/bin/llama-server",),
        "mounts": (Mount(STORE, "/store"),),
        "api_key_env": "LLAMA_API_KEY",
    }
    fields.update(kw)
    return EngineService(**fields)


def vllm_engine(*, tp: int = 2, pp: int = 1, **kw: Any) -> EngineService:
    command = ["--model", "/store/models/llama-8b", "--served-model-name", "llama", "--host", "0.0.0.0"]
    command += ["--port", "8000", "--max-model-len", "8192", "--tensor-parallel-size", str(tp)]
    if pp > 1:
        command += ["--pipeline-parallel-size", str(pp)]
    fields: dict[str, Any] = {
        "name": "engine-llama",
        "model": "llama",
        "kind": "vllm",
        "image": digest_ref("vllm/vllm-openai"),
        "command": tuple(command),
        "env": {"HF_HUB_OFFLINE": "1", "HF_HOME": "/store/hf"},
        "port": 8000,
        "health_path": "/health",
        "gpus": tp * pp,
        "gpu_ids": tuple(str(i) for i in range(tp * pp)),
        "shm_bytes": None,
        "model_dir": "/store/models/llama-8b",
        "startup_s": 900.0,
        "memory_bytes": None,
        "cpus": None,
        "mounts": (Mount(STORE, "/store"),),
        "api_key_env": "VLLM_API_KEY",
    }
    fields.update(kw)
    return EngineService(**fields)


def deployment(*engines: EngineService, gateway_image: str | None = None) -> Deployment:
    spec_yaml = yaml.safe_dump(
        {
            "version": 1,
            "gateway": {"host": "0.0.0.0", "port": 8080},
            "models": [
                {
                    "name": e.model,
                    "engine": {
                        "kind": "remote",
                        "url": f"http://{e.name}:{e.port}/v1",
                        "api_key_env": "AIRLOCK_ENGINE_KEY",
                    },
                }
                for e in engines
            ],
        }
    )
    gateway = GatewayService(image=gateway_image or digest_ref("airlock"), port=8000, spec_yaml=spec_yaml)
    return Deployment(name="site", store=STORE, gateway=gateway, engines=engines, warnings=())


def objects(files: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [o for objs in files.values() for o in objs]


def find(files: dict[str, list[dict[str, Any]]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects(files) if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every container of a workload: a Deployment's, or a RayCluster's head and workers."""
    if obj["kind"] == "Deployment":
        yield from obj["spec"]["template"]["spec"]["containers"]
    elif obj["kind"] == "RayCluster":
        yield from obj["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
        for group in obj["spec"]["workerGroupSpecs"]:
            yield from group["template"]["spec"]["containers"]


def render(d: Deployment, **kw: Any) -> dict[str, list[dict[str, Any]]]:
    return render_k8s(d, K8sOptions(out=Path("unused"), store_size=20 * 1024**3, **kw), engine_key=KEY)


CASES = {
    "cpu-llamacpp": lambda: render(deployment(llamacpp_engine())),
    "gpu-vllm-tp2": lambda: render(
        deployment(vllm_engine(tp=2)), node_selector={"nvidia.com/gpu.present": "true"}
    ),
    "both-hostpath": lambda: render(
        deployment(llamacpp_engine(), vllm_engine()), store_host_path="/srv/store"
    ),
    "vllm-as-root-nodeport": lambda: render(
        deployment(vllm_engine(tp=1)), vllm_as_root=True, gateway_service_type="NodePort"
    ),
}


@pytest.mark.parametrize("version", [OLDEST_K8S, NEWEST_K8S])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_object_validates_against_the_kubernetes_schemas(case: str, version: str) -> None:
    rendered = objects(CASES[case]())
    assert {o["kind"] for o in rendered} >= {
        "Namespace",
        "Secret",
        "NetworkPolicy",
        "ConfigMap",
        "Deployment",
        "Service",
    }
    for obj in rendered:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_fails_a_misspelt_field() -> None:
    """The check above can fail: strict schemas refuse an unknown field, and a wrong type."""
    obj = find(render(deployment(llamacpp_engine())), "Deployment", "engine-smollm2")
    bad = yaml.safe_load(yaml.safe_dump(obj))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "IfNotPresent"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, NEWEST_K8S, strict=True)
    bad = yaml.safe_load(yaml.safe_dump(obj))
    bad["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, OLDEST_K8S, strict=True)


def test_cpu_llamacpp_engine() -> None:
    files = render(deployment(llamacpp_engine()))
    assert list(files) == [
        "namespace.yaml", "store.yaml", "secret.yaml", "network-policy.yaml", "gateway.yaml", "engine-smollm2.yaml",
    ]  # fmt: skip
    dep = find(files, "Deployment", "engine-smollm2")
    assert dep["metadata"]["namespace"] == "site"
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["/opt/airlock/llama.cpp/bin/llama-server"]
    assert c["args"][:2] == ["--model", "/store/gguf/tiny.gguf"] and c["args"][-2:] == ["--parallel", "2"]
    assert c["imagePullPolicy"] == "IfNotPresent"
    # plan's memory (3 GiB) plus 512 MiB for the runtime; the limit a quarter more; CPUs requested only
    assert c["resources"] == {
        "requests": {"memory": "3584Mi", "cpu": "4000m"},
        "limits": {"memory": "4480Mi"},
    }
    assert "nodeSelector" not in pod and "tolerations" not in pod
    # probes on the health route; the startup probe allows the 120 s load time
    assert c["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] == 120
    assert c["readinessProbe"]["httpGet"]["path"] == c["livenessProbe"]["httpGet"]["path"] == "/health"
    # the store: a ReadOnlyMany claim mounted read-only
    claim = find(files, "PersistentVolumeClaim", "site-store")
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    store = next(v for v in pod["volumes"] if v["name"] == "store")
    assert store["persistentVolumeClaim"] == {"claimName": "site-store", "readOnly": True}
    assert {"name": "store", "mountPath": "/store", "readOnly": True} in c["volumeMounts"]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Mi"}
    # the engine's key comes from the Secret, under the variable the engine reads
    key_env = next(e for e in c["env"] if e["name"] == "LLAMA_API_KEY")
    assert key_env["valueFrom"]["secretKeyRef"] == {"name": "site-engine-key", "key": SECRET_KEY}
    svc = find(files, "Service", "engine-smollm2")
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["port"] == 8000
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert set(svc["spec"]["selector"].items()) <= set(dep["spec"]["template"]["metadata"]["labels"].items())


def test_every_container_is_locked_down_and_non_root() -> None:
    files = render(deployment(llamacpp_engine(), vllm_engine()))
    workloads = [o for o in objects(files) if o["kind"] == "Deployment"]
    assert len(workloads) == 3
    for obj in workloads:
        pod = obj["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        for c in containers(obj):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {
                "type": "RuntimeDefault"
            }
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == RUN_UID
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    ns = find(files, "Namespace", "site")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_vllm_tp2_takes_two_gpus_on_the_selected_nodes() -> None:
    files = render(
        deployment(vllm_engine(tp=2)),
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=(Toleration("dedicated", "llm", "NoSchedule"),),
    )
    dep = find(files, "Deployment", "engine-llama")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    assert "command" not in c  # the image's own entrypoint (vLLM's server)
    assert c["args"][c["args"].index("--tensor-parallel-size") + 1] == "2"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["sizeLimit"] == "2048Mi"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] == 900
    env = {e["name"]: e for e in c["env"]}
    assert env["HF_HOME"]["value"] == "/store/hf" and env["HOME"]["value"] == "/tmp/home"
    assert "secretKeyRef" in env["VLLM_API_KEY"]["valueFrom"]


def test_vllm_as_root_lowers_the_namespace_to_baseline() -> None:
    files = render(deployment(vllm_engine()), vllm_as_root=True)
    (c,) = containers(find(files, "Deployment", "engine-llama"))
    assert "runAsUser" not in c["securityContext"] and c["securityContext"]["readOnlyRootFilesystem"] is True
    labels = find(files, "Namespace", "site")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"


def test_gateway_config_secret_state_and_service() -> None:
    d = deployment(llamacpp_engine())
    files = render(d, gateway_service_type="LoadBalancer")
    cm = find(files, "ConfigMap", "gateway-config")
    assert cm["data"] == {"airlock.yaml": d.gateway.spec_yaml}
    dep = find(files, "Deployment", "gateway")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == [
        "serve",
        "--config",
        "/etc/airlock/airlock.yaml",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    assert c["env"] == [
        {
            "name": "AIRLOCK_ENGINE_KEY",
            "valueFrom": {"secretKeyRef": {"name": "site-engine-key", "key": SECRET_KEY}},
        }
    ]
    assert {"name": "config", "mountPath": "/etc/airlock", "readOnly": True} in c["volumeMounts"]
    assert {"name": "state", "mountPath": "/var/lib/airlock"} in c["volumeMounts"]
    assert pod["securityContext"]["fsGroup"] == RUN_UID
    state = find(files, "PersistentVolumeClaim", "gateway-state")
    assert state["spec"]["accessModes"] == ["ReadWriteOnce"]
    svc = find(files, "Service", "gateway")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]


def test_no_secret_in_any_configmap() -> None:
    files = render(deployment(llamacpp_engine(), vllm_engine()))
    secrets_ = [o for o in objects(files) if o["kind"] == "Secret"]
    assert [s["stringData"] for s in secrets_] == [{SECRET_KEY: KEY}]
    for obj in objects(files):
        text = yaml.safe_dump(obj)
        if obj["kind"] != "Secret":
            assert KEY not in text, f"the engine key leaked into {obj['kind']} {obj['metadata']['name']}"
    for cm in (o for o in objects(files) if o["kind"] == "ConfigMap"):
        gateway = yaml.safe_load(cm["data"]["airlock.yaml"])
        assert all("api_key" not in m["engine"] for m in gateway["models"])
    for obj in objects(files):  # every key variable is a reference to the Secret, never a value
        for c in containers(obj):
            for env in c.get("env", []):
                if "KEY" in env["name"]:
                    assert (
                        "value" not in env and env["valueFrom"]["secretKeyRef"]["name"] == "site-engine-key"
                    )


def test_images_all_by_digest_and_a_tag_refused() -> None:
    files = render(deployment(llamacpp_engine(), vllm_engine()))
    images = [c["image"] for o in objects(files) for c in containers(o)]
    assert len(images) == 3 and all("@sha256:" in i and len(i.rsplit(":", 1)[1]) == 64 for i in images)
    assert all(c["imagePullPolicy"] == "IfNotPresent" for o in objects(files) for c in containers(o))
    with pytest.raises(DeployError, match=r"vllm/vllm-openai:v0\.11\.0 is not pinned by digest"):
        render(deployment(vllm_engine(image="vllm/vllm-openai:v0.11.0")))
    with pytest.raises(DeployError, match=r"the gateway: image airlock:0\.1\.0"):
        render(deployment(llamacpp_engine(), gateway_image="airlock:0.1.0"))


def test_network_policy_denies_egress_but_dns_and_the_engines() -> None:
    files = render(deployment(llamacpp_engine(), vllm_engine()))
    assert [o["kind"] for o in files["network-policy.yaml"]] == ["NetworkPolicy"] * 4
    deny = find(files, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = find(files, "NetworkPolicy", "allow-dns")["spec"]
    assert dns["podSelector"] == {} and dns["policyTypes"] == ["Egress"]
    (rule,) = dns["egress"]
    assert rule["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert sorted((p["protocol"], p["port"]) for p in rule["ports"]) == [("TCP", 53), ("UDP", 53)]
    gw_labels = find(files, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    gw = find(files, "NetworkPolicy", "gateway")["spec"]
    assert set(gw["podSelector"]["matchLabels"].items()) <= set(gw_labels.items())
    assert gw["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]  # anyone, to the gateway's port
    (out,) = gw["egress"]
    engine_sel = out["to"][0]["podSelector"]["matchLabels"]
    for name in ("engine-smollm2", "engine-llama"):
        labels = find(files, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert set(engine_sel.items()) <= set(labels.items())
    assert not set(engine_sel.items()) <= set(gw_labels.items())
    engines = find(files, "NetworkPolicy", "engines")["spec"]
    assert engines["policyTypes"] == ["Ingress"]  # egress stays denied (DNS aside)
    assert engines["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": gw["podSelector"]["matchLabels"]}}],
            "ports": [{"protocol": "TCP", "port": 8000}],
        }
    ]
    # no policy lets anything out of the namespace but DNS: every egress peer is a pod of it, or DNS
    for policy in (o for o in objects(files) if o["kind"] == "NetworkPolicy"):
        for egress in policy["spec"].get("egress", []):
            for peer in egress["to"]:
                assert "ipBlock" not in peer
                assert "namespaceSelector" not in peer or peer == rule["to"][0]


def test_model_outside_the_store_needs_a_host_path() -> None:
    outside = llamacpp_engine(mounts=(Mount(Path("/data/models/tiny.gguf"), "/model/tiny.gguf"),))
    with pytest.raises(DeployError, match="outside the store"):
        render(deployment(outside))
    files = render(deployment(outside), store_host_path="/srv/airlock/store")
    pod = find(files, "Deployment", "engine-smollm2")["spec"]["template"]["spec"]
    model = next(v for v in pod["volumes"] if v["name"].startswith("model-"))
    assert model["hostPath"]["path"] == "/data/models/tiny.gguf"
    assert "store.yaml" not in files
    assert (
        find(files, "Namespace", "site")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        == "privileged"
    )


def test_an_existing_store_claim_is_used_not_rendered() -> None:
    files = render(deployment(llamacpp_engine()), store_claim="airlock-store", storage_class="cephfs")
    assert "store.yaml" not in files
    pod = find(files, "Deployment", "engine-smollm2")["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "airlock-store"


def test_bad_namespace_and_option_parsers() -> None:
    with pytest.raises(ConfigError, match="not a DNS label"):
        render(deployment(llamacpp_engine()), namespace="Site_1")
    assert parse_toleration("nvidia.com/gpu:NoSchedule") == Toleration("nvidia.com/gpu", None, "NoSchedule")
    assert parse_toleration("dedicated=llm") == Toleration("dedicated", "llm", None)
    with pytest.raises(ConfigError, match="effect 'Never'"):
        parse_toleration("dedicated=llm:Never")
    assert parse_labels(["node.kubernetes.io/instance-type=p5.48xlarge"]) == {
        "node.kubernetes.io/instance-type": "p5.48xlarge"
    }
    with pytest.raises(ConfigError, match="not key=value"):
        parse_labels(["gpu"])


def test_write_k8s_folder_kustomization_secret_mode_and_rerender(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    first = write_k8s(deployment(llamacpp_engine(), vllm_engine()), K8sOptions(out=out, store_size=1))
    assert first.files[-1] == "kustomization.yaml" and first.namespace == "site" and not first.secret_kept
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization" and kustomization["namespace"] == "site"
    assert kustomization["resources"] == list(first.files[:-1])
    assert sorted(p.name for p in out.iterdir()) == sorted(first.files)
    assert stat.S_IMODE((out / "secret.yaml").stat().st_mode) == 0o600
    key = yaml.safe_load((out / "secret.yaml").read_text())["stringData"][SECRET_KEY]
    assert len(key) >= 40
    parsed = [doc for name in first.files[:-1] for doc in yaml.safe_load_all((out / name).read_text())]
    assert parsed == list(first.objects)
    # again, without the vLLM engine: the key is kept, its file goes
    second = write_k8s(deployment(llamacpp_engine()), K8sOptions(out=out, store_size=1))
    assert second.secret_kept
    assert yaml.safe_load((out / "secret.yaml").read_text())["stringData"][SECRET_KEY] == key
    assert not (out / "engine-llama.yaml").exists() and (out / "engine-smollm2.yaml").exists()


def test_from_a_spec_and_a_store(
    write_spec: SpecWriter, settings: Settings, store: Path, tmp_path: Path
) -> None:
    """build_deployment's own output renders: airlock's image placed in the registry by digest."""
    db = Store(store).load_db()
    images = [i for i in db.images if i.repository != "docker.io/library/airlock"]
    images.append(stored_image(store, "airlock:0.1.0", "docker.io/library/airlock", "0.1.0", ["registry"]))
    Store(store).save_db(StoreDb(images=images))
    d = build_deployment(DeployOptions(spec=write_spec(), settings=settings, host_gpus=0))
    result = write_k8s(d, K8sOptions(out=tmp_path / "k8s"))
    assert result.namespace == "site" and "engine-smollm2.yaml" in result.files
    for obj in result.objects:
        kubernetes_validate.validate(obj, NEWEST_K8S, strict=True)
    (c,) = containers(
        next(
            o
            for o in result.objects
            if o["kind"] == "Deployment" and o["metadata"]["name"] == "engine-smollm2"
        )
    )
    assert c["image"].startswith(f"{REGISTRY}/library/airlock@sha256:")
    assert c["args"] == list(d.engines[0].command)


def test_a_docker_tag_from_the_store_is_refused(
    write_spec: SpecWriter, settings: Settings, tmp_path: Path
) -> None:
    d = build_deployment(DeployOptions(spec=write_spec(), settings=settings, host_gpus=0))
    with pytest.raises(DeployError, match="not pinned by digest") as err:
        write_k8s(d, K8sOptions(out=tmp_path / "k8s"))
    assert err.value.hint is not None and "--registry" in err.value.hint
