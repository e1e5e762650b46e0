"""``airlock deploy compose --up`` for real: docker-compose 1.29 against a real dockerd (its own network
namespace, loopback only: nothing can be pulled), airlock's own image built by ``build_image`` and
loaded as ``airlock install --docker`` loads it, llama.cpp serving the default model from the store
mounted read-only, a chat answered through the gateway with a key made in its state volume; a second
``--up`` after a spec change replaces the engine only; ``--down``. And what ``--up`` says when an
engine fails, a port is taken, an image is not loaded, or the daemon is not running.

The store's record of the image is written here as install writes it (the manifest in the store's
blobs, a docker target under the tag): packing and installing a 300 MB image would add minutes and
is tested elsewhere (test_install_images.py). ``AIRLOCK_DEPLOY_TEST_IMAGE=DIR`` reuses an OCI layout
already built (by ``airlock image build``) instead of building one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from airlock.deploy.compose import Docker, ensure_metrics_key
from airlock.image_build import BuiltImage
from airlock.registry.docker_load import docker_load
from airlock.registry.oci import OciLayout
from airlock.serving.default_model import DEFAULT_MODEL_FILE, locate_default_model
from airlock.settings import Settings
from airlock.store.db import ImageTarget, StoreDb, StoredImage
from airlock.store.store import Store
from airlock.testing.dockerd import daemon_pid, docker, in_daemon_netns, request_in_daemon_netns
from harness import need

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TAG = "airlock:deploy-test"
AIRLOCK = [sys.executable, "-m", "airlock.cli.main"]


@dataclasses.dataclass(frozen=True)
class Image:
    layout: Path
    manifest_digest: str
    config_digest: str


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="airlock-deploy-test-") as name:
        yield Path(name)


@pytest.fixture(scope="session")
def image(request: pytest.FixtureRequest) -> Image:
    """airlock's own image: the session's build (the integration conftest), or AIRLOCK_DEPLOY_TEST_IMAGE."""
    given = os.environ.get("AIRLOCK_DEPLOY_TEST_IMAGE")
    if given:
        layout = OciLayout.open(Path(given))
        (desc,) = layout.refs().values()
    else:
        need("docker-compose")
        built: BuiltImage = request.getfixturevalue("airlock_image")  # built once per session
        return Image(built.layout, built.manifest_digest, built.config_digest)
    manifest = json.loads(layout.read_blob(desc.digest))
    return Image(Path(given), desc.digest, manifest["config"]["digest"])


@pytest.fixture(scope="session")
def loaded(image: Image, docker_host: str) -> str:
    docker_load(OciLayout.open(image.layout), [(image.manifest_digest, TAG)], docker_host=docker_host)
    return TAG


@pytest.fixture(scope="session")
def store(image: Image, settings: Settings, workdir: Path) -> Path:
    """A store holding the default model's GGUF and the image, as `airlock install --docker` records it."""
    root = workdir / "store"
    s = Store(root)
    s.ensure()
    hexdigest = image.manifest_digest.removeprefix("sha256:")
    blob = s.image_blob(hexdigest)
    blob.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(image.layout / "blobs" / "sha256" / hexdigest, blob)
    record = StoredImage(
        reference=TAG, repository="docker.io/library/airlock", tag="deploy-test", digest=image.manifest_digest,
        media_type="application/vnd.oci.image.manifest.v1+json", platform="linux/amd64", size=blob.stat().st_size,
        files=[], bundle="0" * 64, installed="2026-11-30T00:00:00Z",
        targets=[ImageTarget(kind="docker", reference=TAG, at="2026-11-30T00:00:00Z")],
    )  # fmt: skip
    s.save_db(StoreDb(images=[record]))
    (root / "gguf").mkdir()
    shutil.copy2(locate_default_model(settings), root / "gguf" / DEFAULT_MODEL_FILE)
    return root


def _free_port_in(host: str) -> int:
    """A port free in the daemon's network namespace (where the gateway's port is published)."""
    code = "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
    return int(in_daemon_netns(host, [sys.executable, "-c", code]).stdout)


def _airlock(host: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": host}
    return subprocess.run([*AIRLOCK, *args], capture_output=True, text=True, timeout=900, env=env)


def _compose(host: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", str(out / "docker-compose.yml"), *args],
        capture_output=True, text=True, timeout=300, cwd=out, env={**os.environ, "DOCKER_HOST": host},
        check=False,
    )  # fmt: skip


def _spec(folder: Path, store: Path, port: int, **engine: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "airlock.yaml"
    model = {"name": "smollm2", "aliases": ["default"], "gguf": str(store / "gguf" / DEFAULT_MODEL_FILE),
             "engine": {"kind": "llamacpp", "parallel": 2, "ctx_size": 2048, **engine}}  # fmt: skip
    path.write_text(yaml.safe_dump({"store": str(store), "gateway": {"port": port}, "models": [model]}))
    return path


def _ids(host: str, out: Path) -> dict[str, str]:
    return {s: _compose(host, out, "ps", "-q", s).stdout.strip() for s in ("gateway", "engine-smollm2")}


def test_up_chat_change_and_down(docker_host: str, loaded: str, store: Path, workdir: Path) -> None:
    port = _free_port_in(docker_host)
    spec = _spec(workdir / "site", store, port)
    out = workdir / "deploy"
    up = _airlock(docker_host, "deploy", "compose", str(spec), "--out", str(out), "--up")
    assert up.returncode == 0, up.stderr
    assert "engine-smollm2" in up.stderr and "healthy" in up.stderr
    assert "started or replaced: gateway, engine-smollm2" in up.stderr
    first = _ids(docker_host, out)
    assert all(first.values()), first
    # the engine: airlock's image running llama-server with the store read-only, on the internal network
    inspected = json.loads(docker(docker_host, "inspect", first["engine-smollm2"]).stdout)[0]
    assert inspected["Image"] == json.loads(docker(docker_host, "image", "inspect", loaded).stdout)[0]["Id"]
    mounts = {m["Destination"]: m for m in inspected["Mounts"]}
    assert mounts["/store"]["RW"] is False
    assert inspected["Config"]["Entrypoint"] == ["/opt/airlock/llama.cpp/bin/llama-server"]
    assert inspected["HostConfig"]["PortBindings"] in ({}, None), "only the gateway publishes a port"
    networks = json.loads(docker(docker_host, "network", "inspect", "site_engines").stdout)[0]
    assert networks["Internal"] is True
    # a key made in the gateway's state volume; a chat answered through the gateway, 401 without it
    made = _compose(
        docker_host, out, "run", "--rm", "--no-deps", "gateway", "keys", "create", "tester", "--quiet"
    )
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("al-"), made
    base = f"http://127.0.0.1:{port}"
    chat = {"model": "default", "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 16, "temperature": 0}  # fmt: skip
    assert request_in_daemon_netns(docker_host, f"{base}/v1/chat/completions", body=chat)["status"] == 401
    answered = request_in_daemon_netns(docker_host, f"{base}/v1/chat/completions", token=token, body=chat)
    assert answered["status"] == 200, answered
    reply = json.loads(answered["body"])
    assert reply["model"] == "smollm2" and reply["usage"]["completion_tokens"] > 0, reply
    # Prometheus's key (--monitoring): /metrics only
    metrics_key = ensure_metrics_key(out, Docker(host=docker_host)).read_text().strip()
    assert stat.S_IMODE((out / "monitoring").stat().st_mode) == 0o700
    scraped = request_in_daemon_netns(docker_host, f"{base}/metrics", token=metrics_key)
    assert scraped["status"] == 200 and "airlock_requests_total" in scraped["body"], scraped
    assert (
        request_in_daemon_netns(docker_host, f"{base}/v1/chat/completions", token=metrics_key, body=chat)[
            "status"
        ]
        == 403
    )
    # a spec change: the engine is replaced, the gateway stays (same container)
    _spec(workdir / "site", store, port, parallel=3)
    again = _airlock(docker_host, "deploy", "compose", str(spec), "--out", str(out), "--up")
    assert again.returncode == 0, again.stderr
    assert "started or replaced: engine-smollm2" in again.stderr
    second = _ids(docker_host, out)
    assert second["gateway"] == first["gateway"] and second["engine-smollm2"] != first["engine-smollm2"]
    command = json.loads(docker(docker_host, "inspect", second["engine-smollm2"]).stdout)[0]["Args"]
    assert command[command.index("--parallel") + 1] == "3"
    answered = request_in_daemon_netns(docker_host, f"{base}/v1/chat/completions", token=token, body=chat)
    assert answered["status"] == 200, answered
    # nothing changed: nothing replaced
    same = _airlock(docker_host, "deploy", "compose", str(spec), "--out", str(out), "--up")
    assert same.returncode == 0 and "nothing (all up to date)" in same.stderr, same.stderr
    # down: containers gone, the key's volume stays
    down = _airlock(docker_host, "deploy", "compose", str(spec), "--out", str(out), "--down")
    assert down.returncode == 0, down.stderr
    assert _compose(docker_host, out, "ps", "-q").stdout.strip() == ""
    assert "site_state" in docker(docker_host, "volume", "ls", "-q").stdout


def test_an_engine_that_fails_shows_its_log_tail_and_the_fix(
    docker_host: str, loaded: str, store: Path, workdir: Path
) -> None:
    spec = _spec(workdir / "broken", store, _free_port_in(docker_host), args=["--no-such-flag"])
    out = workdir / "broken-deploy"
    up = _airlock(docker_host, "deploy", "compose", str(spec), "--out", str(out), "--up")
    try:
        assert up.returncode == 23, up.stderr
        assert "engine-smollm2:" in up.stderr and "--no-such-flag" in up.stderr, up.stderr
        assert "Traceback" not in up.stderr
    finally:
        _airlock(docker_host, "deploy", "compose", str(spec), "--out", str(out), "--down")


def test_a_port_taken_in_the_daemons_namespace(
    docker_host: str, loaded: str, store: Path, workdir: Path
) -> None:
    """The port is free here (the check before up passes) but taken where docker publishes it: compose's
    own failure, named with the fix."""
    holder = subprocess.Popen(
        ["nsenter", f"--net=/proc/{daemon_pid(docker_host)}/ns/net", sys.executable, "-c",
         "import socket, sys, time; s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
         "print(s.getsockname()[1], flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        spec = _spec(workdir / "taken", store, port)
        out = workdir / "taken-deploy"
        up = _airlock(docker_host, "deploy", "compose", str(spec), "--out", str(out), "--up")
        assert up.returncode == 23, up.stderr
        assert "address already in use" in up.stderr.lower() or "already allocated" in up.stderr, up.stderr
        assert "another process holds that port" in up.stderr
    finally:
        holder.kill()
        holder.wait()
        _airlock(docker_host, "deploy", "compose", str(workdir / "taken" / "airlock.yaml"), "--out",
                 str(workdir / "taken-deploy"), "--down")  # fmt: skip


def test_an_image_not_loaded_is_never_pulled(
    docker_host: str, store: Path, workdir: Path, image: Image
) -> None:
    other = workdir / "store-other"
    shutil.copytree(store, other, symlinks=True)
    s = Store(other)
    db = s.load_db()
    moved = db.images[0].model_copy(
        update={
            "reference": "airlock:absent",
            "targets": [ImageTarget(kind="docker", reference="airlock:absent", at="t")],
        }
    )
    s.save_db(db.model_copy(update={"images": [moved]}))
    spec = _spec(workdir / "absent", other, 18999)
    up = _airlock(
        docker_host, "deploy", "compose", str(spec), "--out", str(workdir / "absent-deploy"), "--up"
    )
    assert up.returncode == 23, up.stderr
    assert "image airlock:absent is not in the docker daemon (it would be pulled)" in up.stderr
    assert "airlock install DIR --docker" in up.stderr


def test_a_tag_that_points_at_another_image_is_refused(
    docker_host: str, loaded: str, store: Path, workdir: Path
) -> None:
    """The store recorded another config digest for the tag the daemon has: a supply-chain surprise."""
    other = workdir / "store-impostor"
    shutil.copytree(store, other, symlinks=True)
    s = Store(other)
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "0" * 64}}).encode()
    hexdigest = hashlib.sha256(manifest).hexdigest()
    s.image_blob(hexdigest).write_bytes(manifest)
    db = s.load_db()
    s.save_db(
        db.model_copy(update={"images": [db.images[0].model_copy(update={"digest": f"sha256:{hexdigest}"})]})
    )
    spec = _spec(workdir / "impostor", other, 18997)
    up = _airlock(
        docker_host, "deploy", "compose", str(spec), "--out", str(workdir / "impostor-deploy"), "--up"
    )
    assert up.returncode == 23, up.stderr
    assert f"the daemon's {TAG} is sha256:" in up.stderr and "not the sha256:" + "0" * 64 in up.stderr
    assert _compose(docker_host, workdir / "impostor-deploy", "ps", "-q").stdout.strip() == ""


def test_a_daemon_that_is_not_running(store: Path, workdir: Path) -> None:
    spec = _spec(workdir / "nodaemon", store, 18998)
    gone = f"unix://{workdir}/no-daemon.sock"
    up = _airlock(gone, "deploy", "compose", str(spec), "--out", str(workdir / "nodaemon-deploy"), "--up")
    assert up.returncode == 23, up.stderr
    assert f"the docker daemon at {gone} is not running" in up.stderr and "Traceback" not in up.stderr
