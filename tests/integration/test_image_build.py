"""``airlock image build`` for real: mmdebstrap's Debian root (cached under the airlock cache, keyed by
its package list, so a rerun skips it), pip, umoci; the layout read back with skopeo and umoci; a
second build from the same inputs gives the same manifest digest; and the image loaded into a real
dockerd (the session's, in its own network namespace with only loopback) serves the default model:
a key made with ``docker run IMAGE keys create`` on the state volume opens the chat endpoint, no key
gets 401, as ``airlock serve`` with no airlock.yaml does.

Needs root, mmdebstrap, umoci, skopeo, the cached llama-server build and the default model (``make
setup``); a missing one fails in CI and skips elsewhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.image_build import BuiltImage, ImageBuildOptions, build_image
from airlock.registry.docker_load import docker_load
from airlock.registry.oci import OciLayout
from airlock.testing.dockerd import docker, request_in_daemon_netns

pytestmark = pytest.mark.integration

LAYERS = ["debian", "python", "model", "llama.cpp", "airlock"]


@pytest.fixture(scope="session")
def workdir(image_workdir: Path) -> Path:
    return image_workdir


@pytest.fixture(scope="session")
def options(image_options: ImageBuildOptions) -> ImageBuildOptions:
    return image_options


@pytest.fixture(scope="session")
def built(airlock_image: BuiltImage) -> BuiltImage:
    return airlock_image


def _json(*argv: str) -> dict[str, object]:
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
    found: dict[str, object] = json.loads(done.stdout)
    return found


def test_skopeo_and_umoci_read_the_layout(built: BuiltImage, options: ImageBuildOptions) -> None:
    reference = f"oci:{built.layout}:{options.tag}"
    inspected = _json("skopeo", "inspect", reference)
    assert inspected["Digest"] == built.manifest_digest
    assert inspected["Labels"] == built.labels
    assert inspected["Layers"] == [layer.digest for layer in built.layers]
    assert (inspected["Architecture"], inspected["Os"]) == ("amd64", "linux")
    config = _json("skopeo", "inspect", "--config", reference)["config"]
    assert isinstance(config, dict)
    assert config["Entrypoint"] == ["/opt/airlock/venv/bin/airlock"]
    assert config["Cmd"] == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["User"] == "10001:10001"
    assert config["Volumes"] == {"/var/lib/airlock": {}}
    assert "AIRLOCK_HOME=/var/lib/airlock" in config["Env"]
    stat = _json("umoci", "stat", "--image", f"{built.layout}:{options.tag}", "--json")
    entries = stat["history"]
    assert isinstance(entries, list)
    history = [entry["created_by"] for entry in entries]
    assert history == [f"airlock image build: {name}" for name in LAYERS]
    # what the labels say is what went in
    model_sha = hashlib.sha256(options.model.read_bytes()).hexdigest()
    assert built.labels["io.airlock.model.sha256"] == model_sha == built.contents.model_sha256
    info = json.loads((options.llama_server.parent.parent / "BUILD-INFO.json").read_text())
    assert built.labels["io.airlock.llama-cpp.commit"] == info["llama_cpp_commit"]
    python = dict(built.contents.python_packages)
    assert python["airlock"] == built.labels["org.opencontainers.image.version"]
    assert {"uvicorn", "aiohttp", "pydantic"} <= set(python)
    debian = dict(built.contents.debian_packages)
    assert "python3-venv" in debian and "libgomp1:amd64" in debian
    assert [layer.name for layer in built.layers] == LAYERS
    assert built.layers[-1].size < built.layers[1].size, "airlock's own layer is the small one on top"


def test_the_same_inputs_and_its_lock_give_the_same_digest(
    built: BuiltImage, options: ImageBuildOptions, workdir: Path
) -> None:
    lock = workdir / "requirements.lock"
    lock.write_text(built.contents.requirements_lock())  # the dependencies again, pinned by hash
    again = build_image(dataclasses.replace(options, out=workdir / "again", lock=lock))
    assert again.contents.wheel_hashes == built.contents.wheel_hashes
    assert [layer.diff_id for layer in again.layers] == [layer.diff_id for layer in built.layers]
    assert again.manifest_digest == built.manifest_digest


# --- in docker ----------------------------------------------------------------------------------------

IMAGE = "airlock:test"
VOLUME = "airlock-image-test-state"
CONTAINER = "airlock-image-test"


@pytest.fixture
def loaded(built: BuiltImage, docker_host: str) -> Iterator[str]:
    docker_load(OciLayout.open(built.layout), [(built.manifest_digest, IMAGE)], docker_host=docker_host)
    yield IMAGE
    docker(docker_host, "rm", "-f", CONTAINER, check=False)
    docker(docker_host, "volume", "rm", "-f", VOLUME, check=False)
    docker(docker_host, "rmi", "-f", IMAGE, check=False)


def test_the_image_serves_the_default_model_in_docker(
    loaded: str, docker_host: str, built: BuiltImage
) -> None:
    inspected = json.loads(docker(docker_host, "image", "inspect", loaded).stdout)[0]
    assert inspected["Id"] == built.config_digest
    # the operator's first step (docs/image.md): a key, made in the state volume
    made = docker(docker_host, "run", "--rm", "--network", "none", "-v", f"{VOLUME}:/var/lib/airlock",
                   loaded, "keys", "create", "tester", "--quiet")  # fmt: skip
    token = made.stdout.strip()
    assert token.startswith("al-"), made
    owner = docker(docker_host, "run", "--rm", "--network", "none", "-v", f"{VOLUME}:/var/lib/airlock",
                    "--entrypoint", "stat", loaded, "-c", "%u %a", "/var/lib/airlock/keys.db")  # fmt: skip
    assert owner.stdout.split()[0] == "10001", "the state belongs to the unprivileged user"
    # then the image's own command: airlock serve on 0.0.0.0:8080, no airlock.yaml, keys required
    docker(docker_host, "run", "-d", "--name", CONTAINER, "--network", "host",
            "-v", f"{VOLUME}:/var/lib/airlock", loaded)  # fmt: skip
    base = "http://127.0.0.1:8080"
    deadline = time.monotonic() + 240  # a guard against a hang, not a measure
    while True:
        ready = request_in_daemon_netns(docker_host, f"{base}/ready")
        if ready["status"] == 200:
            break
        state = json.loads(docker(docker_host, "inspect", CONTAINER).stdout)[0]["State"]
        logs = docker(docker_host, "logs", CONTAINER, check=False)
        assert state["Running"], f"the container stopped ({state['ExitCode']}):\n{logs.stdout}{logs.stderr}"
        assert time.monotonic() < deadline, f"not ready: {ready}\n{logs.stdout}{logs.stderr}"
        time.sleep(0.5)
    chat = {
        "model": "default",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 24,
        "temperature": 0,
    }
    refused = request_in_daemon_netns(docker_host, f"{base}/v1/chat/completions", body=chat)
    assert refused["status"] == 401, refused
    answered = request_in_daemon_netns(docker_host, f"{base}/v1/chat/completions", token=token, body=chat)
    assert answered["status"] == 200, answered
    reply = json.loads(str(answered["body"]))
    content = reply["choices"][0]["message"]["content"]
    assert isinstance(content, str) and content.strip(), reply
    assert reply["usage"]["completion_tokens"] > 0, reply
    said = docker(docker_host, "logs", CONTAINER).stderr
    assert "ready: http://0.0.0.0:8080/v1" in said
    assert "smollm2-135m-instruct" in said
