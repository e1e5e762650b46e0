"""``airlock deploy k8s`` on the command line: flags into K8sOptions, a folder of manifests, errors as errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from airlock.cli.deploy import app as deploy_app
from airlock.errors import ConfigError, DeployError
from airlock.store.db import StoreDb
from airlock.store.store import Store

from .conftest import REGISTRY, SpecWriter, stored_image


@pytest.fixture
def registry_store(store: Path) -> Path:
    """The deploy conftest's store with airlock's image in the registry, by digest."""
    db = Store(store).load_db()
    images = [i for i in db.images if i.repository != "docker.io/library/airlock"]
    images.append(stored_image(store, "airlock:0.1.0", "docker.io/library/airlock", "0.1.0", ["registry"]))
    Store(store).save_db(StoreDb(images=images))
    return store


def test_renders_a_folder_with_the_flags(
    write_spec: SpecWriter, registry_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRLOCK_HOME", str(tmp_path / "home"))
    out = tmp_path / "k8s"
    args = ["k8s", str(write_spec()), "--out", str(out), "-n", "llm", "--node-selector", "pool=cpu"]
    args += [
        "--toleration",
        "dedicated=llm:NoSchedule",
        "--store-size",
        "50GiB",
        "--service-type",
        "NodePort",
    ]
    result = CliRunner().invoke(deploy_app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(str(out))
    assert "kubectl apply -k" in result.output and f"{REGISTRY}/library/airlock@sha256:" in result.output
    assert yaml.safe_load((out / "kustomization.yaml").read_text())["namespace"] == "llm"
    engine, _service = yaml.safe_load_all((out / "engine-smollm2.yaml").read_text())
    pod = engine["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}
    ]
    claim = yaml.safe_load((out / "store.yaml").read_text())
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    gateway = [o for o in yaml.safe_load_all((out / "gateway.yaml").read_text()) if o["kind"] == "Service"]
    assert gateway[0]["spec"]["type"] == "NodePort"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--toleration", "a=b:Sometimes"], "effect 'Sometimes'"),
        (["--node-selector", "gpu"], "node selector 'gpu'"),
        (["--store-size", "lots"], "--store-size 'lots': not a size"),
        (["--service-type", "Ingress"], "--service-type 'Ingress'"),
        (["--store-host-path", "/srv/store", "--store-claim", "c"], "no claim to name or size"),
    ],
)
def test_bad_flags_are_config_errors(
    write_spec: SpecWriter, tmp_path: Path, flags: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        deploy_app, ["k8s", str(write_spec()), "--out", str(tmp_path / "k8s"), *flags]
    )
    assert isinstance(result.exception, ConfigError) and message in result.exception.message
    assert not (tmp_path / "k8s").exists()


def test_an_image_known_only_by_tag_is_refused(write_spec: SpecWriter, tmp_path: Path) -> None:
    result = CliRunner().invoke(deploy_app, ["k8s", str(write_spec()), "--out", str(tmp_path / "k8s")])
    assert isinstance(result.exception, DeployError) and result.exception.exit_code == 23
    assert "not pinned by digest" in result.exception.message
