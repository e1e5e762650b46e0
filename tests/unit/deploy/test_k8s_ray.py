"""deploy k8s over several nodes: vLLM's Ray executor on a KubeRay RayCluster, checked against KubeRay's CRD.

The RayCluster is validated against the ``v1`` schema of KubeRay's own CRD (vendored under
fixtures/kuberay with its source and licence), closed: the API server prunes unknown fields of a
structural schema silently, so here an unknown field fails.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # kubernetes-validate brings it, without stubs
import kubernetes_validate  # type: ignore[import-untyped]  # no stubs, no py.typed
import pytest
import yaml

from airlock.deploy.k8s import NEWEST_K8S, OLDEST_K8S, K8sOptions, write_k8s
from airlock.deploy.k8s_ray import OVERWRITE_CMD, head_script
from airlock.deploy.multinode import RaySplit, flag_value, gpu_wait, ray_split
from airlock.errors import DeployError

from .test_k8s import KEY, containers, deployment, find, objects, render, vllm_engine

SCHEMA = Path(__file__).parent / "fixtures" / "kuberay" / "rayclusters.ray.io-v1.schema.json"


def closed(schema: Any) -> Any:
    """The CRD schema with every object that lists its properties closed to others."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def raycluster_validator() -> jsonschema.protocols.Validator:
    schema = closed(json.loads(SCHEMA.read_text()))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


def two_node_files() -> dict[str, list[dict[str, Any]]]:
    """Llama on 4 GPUs (tp 2 x pp 2) where a node has 2: two Ray nodes of 2 GPUs."""
    return render(deployment(vllm_engine(tp=2, pp=2)), gpus_per_node=2, node_selector={"gpu": "h100"})


def test_split_keeps_tensor_parallel_in_a_node() -> None:
    assert ray_split(vllm_engine(tp=2, pp=2), gpus_per_node=2) == RaySplit(
        nodes=2, gpus_per_node=2, tp=2, pp=2
    )
    assert ray_split(vllm_engine(tp=4, pp=4), gpus_per_node=8) == RaySplit(
        nodes=2, gpus_per_node=8, tp=4, pp=4
    )
    assert ray_split(vllm_engine(tp=2, pp=3), gpus_per_node=4) == RaySplit(
        nodes=3, gpus_per_node=2, tp=2, pp=3
    )
    assert ray_split(vllm_engine(tp=2, pp=2), gpus_per_node=4) is None  # fits on one node
    assert ray_split(vllm_engine(tp=2, pp=2), gpus_per_node=None) is None  # node size unknown
    with pytest.raises(DeployError, match="tensor parallel 8 does not fit on a node of 4 GPUs"):
        ray_split(vllm_engine(tp=8), gpus_per_node=4)
    with pytest.raises(DeployError, match=r"takes 6 GPUs but its tensor x pipeline parallel size is 2 x 2"):
        ray_split(vllm_engine(tp=2, pp=2, gpus=6), gpus_per_node=2)
    assert flag_value(("--a", "1", "--a=2"), "--a") == "2" and flag_value(("--b",), "--a") is None


def test_pp2_over_two_nodes_gives_a_raycluster(raycluster_validator: jsonschema.protocols.Validator) -> None:
    files = two_node_files()
    assert [o["kind"] for o in files["engine-llama.yaml"]] == ["RayCluster", "Service"]
    assert not [
        o for o in objects(files) if o["kind"] == "Deployment" and o["metadata"]["name"] == "engine-llama"
    ]
    cluster = find(files, "RayCluster", "engine-llama")
    assert cluster["apiVersion"] == "ray.io/v1"
    raycluster_validator.validate(cluster)
    assert cluster["metadata"]["annotations"] == {OVERWRITE_CMD: "true"}
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    (group,) = cluster["spec"]["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 1
    worker = group["template"]["spec"]
    for pod in (head, worker):
        (c,) = pod["containers"]
        assert c["resources"] == {"limits": {"nvidia.com/gpu": 2}}
        assert c["image"] == vllm_engine().image and c["imagePullPolicy"] == "IfNotPresent"
        assert pod["nodeSelector"] == {"gpu": "h100"}
        assert {"name": "store", "mountPath": "/store", "readOnly": True} in c["volumeMounts"]
        assert c["securityContext"]["runAsNonRoot"] is True
        assert c["command"] == ["/bin/bash", "-c", "--"]
    (hc,) = head["containers"]
    (wc,) = worker["containers"]
    assert hc["name"] == "ray-head" and wc["name"] == "ray-worker"
    assert wc["args"] == ["ulimit -n 65536 || true; exec $KUBERAY_GEN_RAY_START_CMD"]
    assert "VLLM_API_KEY" in {e["name"] for e in hc["env"]} - {e["name"] for e in wc["env"]}
    assert "startupProbe" not in wc and "readinessProbe" not in wc  # KubeRay's own probes check the raylet
    assert hc["startupProbe"]["httpGet"]["path"] == "/health"
    assert {p["name"]: p["containerPort"] for p in hc["ports"]} == {
        "http": 8000, "gcs": 6379, "dashboard": 8265, "client": 10001,
    }  # fmt: skip
    # vLLM on the head, after all 4 GPUs have joined, with plan's args and the Ray executor
    script = hc["args"][0]
    assert 'ray.cluster_resources().get("GPU", 0) < 4' in script
    last = script.splitlines()[-1]
    assert last.startswith(
        "exec python3 -m vllm.entrypoints.openai.api_server --model /store/models/llama-8b"
    )
    assert "--tensor-parallel-size 2 --pipeline-parallel-size 2 --distributed-executor-backend ray" in last
    # the gateway's URL (http://engine-llama:8000) reaches the head through a Service of that name
    svc = find(files, "Service", "engine-llama")
    assert svc["spec"]["selector"] == {"ray.io/cluster": "engine-llama", "ray.io/node-type": "head"}
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_the_raycluster_check_can_fail(raycluster_validator: jsonschema.protocols.Validator) -> None:
    cluster = find(two_node_files(), "RayCluster", "engine-llama")
    bad = yaml.safe_load(yaml.safe_dump(cluster))
    bad["spec"]["workerGroupSpecs"][0]["replica"] = 1  # misspelt: KubeRay would drop it silently
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        raycluster_validator.validate(bad)
    bad = yaml.safe_load(yaml.safe_dump(cluster))
    del bad["spec"]["workerGroupSpecs"][0]["groupName"]
    with pytest.raises(jsonschema.ValidationError, match="groupName"):
        raycluster_validator.validate(bad)


@pytest.mark.parametrize("version", [OLDEST_K8S, NEWEST_K8S])
def test_the_rest_validates_and_the_ray_pods_talk_only_to_each_other(version: str) -> None:
    files = two_node_files()
    for obj in objects(files):
        if obj["kind"] != "RayCluster":
            kubernetes_validate.validate(obj, version, strict=True)
    policy = find(files, "NetworkPolicy", "ray-engine-llama")["spec"]
    peers = [{"podSelector": {"matchLabels": {"ray.io/cluster": "engine-llama"}}}]
    assert policy == {
        "podSelector": {"matchLabels": {"ray.io/cluster": "engine-llama"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": peers}],
        "egress": [{"to": peers}],
    }
    # the Ray pods carry the engine labels, so the gateway's policy reaches the head's vLLM
    cluster = find(files, "RayCluster", "engine-llama")
    labels = cluster["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    engine_sel = find(files, "NetworkPolicy", "engines")["spec"]["podSelector"]["matchLabels"]
    assert set(engine_sel.items()) <= set(labels.items())
    assert all(KEY not in yaml.safe_dump(o) for o in objects(files) if o["kind"] != "Secret")
    assert all("@sha256:" in c["image"] for o in objects(files) for c in containers(o))


def test_head_script_is_valid_shell_and_refuses_another_executor() -> None:
    engine = vllm_engine(tp=2, pp=2)
    split = ray_split(engine, 2)
    assert split is not None
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run(
        [bash, "-n", "-c", head_script(engine, split)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert f"python3 -c {shlex.quote(gpu_wait(4))}" in head_script(engine, split)
    compile(gpu_wait(4), "gpu_wait", "exec")  # the Python part parses
    mp = vllm_engine(tp=2, pp=2, command=(*engine.command, "--distributed-executor-backend", "mp"))
    with pytest.raises(DeployError, match="--distributed-executor-backend mp cannot span nodes"):
        render(deployment(mp), gpus_per_node=2)


def test_the_file_is_plain_yaml_with_the_script_as_a_block(tmp_path: Path) -> None:
    result = write_k8s(
        deployment(vllm_engine(tp=2, pp=2)), K8sOptions(out=tmp_path, store_size=1, gpus_per_node=2)
    )
    assert result.ray_clusters == ("engine-llama",)
    text = (tmp_path / "engine-llama.yaml").read_text()
    assert "&id" not in text and "*id" not in text  # no anchors: the head and workers share parts
    assert "args:\n          - |-\n            set -eu\n" in text
    cluster, _service = yaml.safe_load_all(text)
    assert cluster == find(
        render(deployment(vllm_engine(tp=2, pp=2)), gpus_per_node=2), "RayCluster", "engine-llama"
    )
