"""The CLI as a user meets it: one-line errors with exit codes, keys, and a served spec stopped by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from airlock.engines.base import free_port
from harness import wait_healthy

AIRLOCK = [sys.executable, "-m", "airlock.cli.main"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "AIRLOCK_HOME": str(tmp_path / "home"), "AIRLOCK_CACHE": str(tmp_path / "cache")}


def airlock(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AIRLOCK, *args], env=env, capture_output=True, text=True, timeout=60, cwd=cwd)


def test_keys_lifecycle(env: dict[str, str]) -> None:
    created = airlock(env, "keys", "create", "alice", "--models", "a,b")
    assert created.returncode == 0, created.stderr
    assert re.search(r"al-[0-9a-f]{12}-\S+", created.stdout)
    quiet = airlock(env, "keys", "create", "bob", "-q")
    assert re.fullmatch(r"al-[0-9a-f]{12}-\S+\n", quiet.stdout)
    listed = airlock(env, "keys", "list")
    assert "alice" in listed.stdout
    assert "a, b" in listed.stdout
    assert "bob" in listed.stdout
    assert quiet.stdout.strip().split("-")[2] not in listed.stdout
    assert airlock(env, "keys", "revoke", "alice").returncode == 0
    again = airlock(env, "keys", "revoke", "alice")
    assert again.returncode == 4
    assert again.stderr.strip() == "error: no active key named 'alice' (see `airlock keys list`)"


def test_errors_are_one_line_without_traceback(env: dict[str, str], tmp_path: Path) -> None:
    missing = airlock(env, "serve", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.yaml'}: no such file"]
    debug = airlock(env, "--debug", "serve", "--config", str(tmp_path / "nope.yaml"))
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr


def test_missing_default_model(env: dict[str, str], tmp_path: Path) -> None:
    result = airlock({**env, "AIRLOCK_DEFAULT_MODEL": str(tmp_path / "absent.gguf")}, "serve", cwd=tmp_path)
    assert result.returncode == 5
    assert "AIRLOCK_DEFAULT_MODEL" in result.stderr
    assert "Traceback" not in result.stderr


def test_engine_binary_missing(env: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "airlock.yaml"
    spec.write_text(
        "models: [{name: m, gguf: m.gguf, engine: {kind: llamacpp, binary: /nonexistent/llama-server}}]\n"
    )
    result = airlock(env, "serve", "--port", "0", cwd=tmp_path)  # ./airlock.yaml is picked up
    assert result.returncode == 3
    assert "engine.binary=/nonexistent/llama-server: not an executable file" in result.stderr


def test_engine_failing_to_start_shows_the_reason_and_log_tail(env: dict[str, str], tmp_path: Path) -> None:
    fake_bin = tmp_path / "llama-server"
    fake_bin.write_text("#!/bin/sh\necho 'error: failed to load model: bad magic' >&2\nexit 1\n")
    fake_bin.chmod(0o755)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"models: [{{name: m, gguf: m.gguf, engine: {{kind: llamacpp, binary: {fake_bin}}}}}]\n")
    result = airlock(env, "serve", "--config", str(spec), "--port", "0")
    assert result.returncode == 3
    assert "error: engine 'm' (llamacpp) exited with code 1 before it was ready" in result.stderr
    assert "failed to load model: bad magic" in result.stderr


def test_port_in_use(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = tmp_path / "s.yaml"
        spec.write_text("models: [{name: r, engine: {kind: remote, url: 'http://127.0.0.1:9'}}]\n")
        result = airlock(env, "serve", "--config", str(spec), "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.fixture
def fake_engine() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airlock.testing.fake_engine", "--port", str(port), "--model", "upstream-name"]
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, what="the fake engine")
    yield url
    proc.terminate()
    proc.wait(10)


def test_serve_a_spec_first_run_key_and_clean_stop(
    env: dict[str, str], tmp_path: Path, fake_engine: str
) -> None:
    spec = tmp_path / "airlock.yaml"
    spec.write_text(
        f"models: [{{name: mine, aliases: [m], engine: {{kind: remote, url: '{fake_engine}/v1', model: upstream-name}}}}]\n"
    )
    proc = subprocess.Popen(
        [*AIRLOCK, "serve", "--config", str(spec), "--port", "0"], env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    lines: list[str] = []
    url = token = None
    deadline = time.monotonic() + 30
    while url is None or token is None:
        assert time.monotonic() < deadline, lines
        line = proc.stderr.readline()
        lines.append(line)
        if m := re.search(r"ready: (http://127\.0\.0\.1:\d+)/v1", line):
            url = m.group(1)
        if m := re.fullmatch(r"\s+(al-[0-9a-f]{12}-\S+)\s*", line):
            token = m.group(1)
    assert any("created the API key admin" in line for line in lines)
    client = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["mine", "m"]
    reply = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.choices[0].message.content == "the quick"
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "airlock: stopped" in rest
