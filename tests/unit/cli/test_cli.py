"""The CLI as a user meets it: one-line errors with exit codes, keys, and a served spec stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from airlock.engines.base import free_port
from harness import wait_healthy

AIRLOCK = [sys.executable, "-m", "airlock.cli.main"]
LLAMA_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
                "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
                "torch_dtype": "bfloat16"}  # fmt: skip


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
    assert quiet.stdout.strip().split("-", 2)[2] not in listed.stdout  # the secret (it may hold "-")
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
    assert result.stderr.strip().splitlines()[1:] == [
        f"error: cannot listen on 127.0.0.1:{port}: the port is in use "
        "(choose another --port (0 picks a free one), or stop what holds it)"
    ]


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_a_port_out_of_range_is_one_line_not_a_traceback(
    env: dict[str, str], tmp_path: Path, port: str
) -> None:
    # The spec's rule (gateway.port: 0 to 65535) for the flag too; bind used to raise OverflowError.
    spec = tmp_path / "s.yaml"
    spec.write_text("models: [{name: r, engine: {kind: remote, url: 'http://127.0.0.1:9'}}]\n")
    result = airlock(env, "serve", "--config", str(spec), "--port", port)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: --port {port}: not a port number (use 1024 to 65535, or 0 for any free port)"
    ]
    assert not (tmp_path / "home" / "keys.db").exists()  # refused before anything was created


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


def _serve_until_ready(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> tuple[subprocess.Popen[str], list[str], str]:
    """Start `airlock serve ARGS`; return it, its stderr lines up to the curl hint, and its URL."""
    proc = subprocess.Popen([*AIRLOCK, "serve", *args], env=env, stderr=subprocess.PIPE, text=True, cwd=cwd)
    assert proc.stderr is not None
    lines: list[str] = []
    url = None
    deadline = time.monotonic() + 30
    while not (lines and lines[-1].lstrip().startswith("curl ")):
        assert time.monotonic() < deadline and proc.poll() is None, lines
        line = proc.stderr.readline()
        lines.append(line.rstrip("\n"))
        if m := re.search(r"ready: (http://127\.0\.0\.1:\d+)/v1", line):
            url = m.group(1)
    assert url is not None, lines
    return proc, lines, url


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    return rest


def test_no_auth_hint_has_no_key(env: dict[str, str], tmp_path: Path, fake_engine: str) -> None:
    spec = tmp_path / "airlock.yaml"
    spec.write_text(
        f"models: [{{name: mine, engine: {{kind: remote, url: '{fake_engine}/v1', model: upstream-name}}}}]\n"
    )
    proc, lines, url = _serve_until_ready(env, "--config", str(spec), "--port", "0", "--no-auth")
    _stop(proc)
    assert lines[-1] == f"  curl {url}/v1/models"  # no Authorization header: there is no key to send
    assert not any("Bearer" in line for line in lines)
    assert any(line.startswith("authentication is OFF (--no-auth)") for line in lines)
    # and with auth on, the hint carries the header
    proc, lines, url = _serve_until_ready(env, "--config", str(spec), "--port", "0")
    _stop(proc)
    assert lines[-1] == f"  curl {url}/v1/models -H 'Authorization: Bearer <key>'"


def test_paths_and_commands_are_printed_whole_and_literal(
    env: dict[str, str], tmp_path: Path, fake_engine: str
) -> None:
    # A path that looks like markup is printed as it is; on a narrow terminal no line break enters a
    # path or a command.
    folder = tmp_path / "[dim]runs" / ("long-directory-name-" * 4)
    folder.mkdir(parents=True)
    spec = folder / "airlock.yaml"
    spec.write_text(
        f"models: [{{name: mine, engine: {{kind: remote, url: '{fake_engine}/v1', model: upstream-name}}}}]\n"
    )
    proc, lines, url = _serve_until_ready({**env, "COLUMNS": "60"}, "--config", str(spec), "--port", "0")
    _stop(proc)
    assert lines[0] == f"airlock: serving {spec}"
    assert lines[-1] == f"  curl {url}/v1/models -H 'Authorization: Bearer <key>'"


def test_serves_the_ready_model_beside_a_remote_that_refuses(
    env: dict[str, str], tmp_path: Path, fake_engine: str
) -> None:
    # 'far' refuses the connection: reported at once (its startup_timeout_s of 600 s is not waited
    # out), and 'mine' is served meanwhile; /ready shows 'far' and answers 503; --require-all fails.
    spec = tmp_path / "airlock.yaml"
    spec.write_text(
        f"models:\n"
        f"- {{name: far, engine: {{kind: remote, url: 'http://127.0.0.1:{free_port()}/v1', startup_timeout_s: 600}}}}\n"
        f"- {{name: mine, engine: {{kind: remote, url: '{fake_engine}/v1', model: upstream-name}}}}\n"
    )
    proc, lines, url = _serve_until_ready(env, "--config", str(spec), "--port", "0", "--no-auth")
    try:
        failed = [line for line in lines if "failed  far" in line]
        assert len(failed) == 1 and "connection refused (nothing listens there)" in failed[0], lines
        assert any(line.startswith(f"ready: {url}/v1  models: mine") for line in lines)
        assert any(line.startswith("not ready: far: failed to start;") for line in lines)
        ready = httpx.get(url + "/ready", timeout=10)
        assert ready.status_code == 503
        assert {k: v["state"] for k, v in ready.json()["engines"].items()} == {
            "far": "failed",
            "mine": "ready",
        }
        body = {"model": "mine", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=10).status_code == 200
        body["model"] = "far"
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=10).status_code == 503
    finally:
        _stop(proc)
    strict = airlock(env, "serve", "--config", str(spec), "--port", "0", "--require-all")
    assert strict.returncode == 3
    assert strict.stderr.splitlines()[-1].startswith(
        "error: engine 'far' (remote): cannot connect to http://127.0.0.1:"
    )
    assert "connection refused" in strict.stderr.splitlines()[-1] and "Traceback" not in strict.stderr
    strict_spec = tmp_path / "strict.yaml"  # the same rule from the spec: gateway.require_all_engines
    strict_spec.write_text("gateway: {require_all_engines: true}\n" + spec.read_text())
    from_spec = airlock(env, "serve", "--config", str(strict_spec), "--port", "0")
    assert from_spec.returncode == 3, from_spec.stderr
    assert "connection refused" in from_spec.stderr.splitlines()[-1]


def test_no_log_format_lines_before_an_error(env: dict[str, str], tmp_path: Path) -> None:
    # The plan's start check is shown as a plain line, not as 'INFO airlock.serving.stack: plan: ...'.
    model = tmp_path / "llama"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"models: [{{name: m, path: {model}, engine: {{kind: vllm, python: {tmp_path / 'no-python'}}}}}]\n"
    )
    result = airlock(env, "serve", "--config", str(spec), "--port", "0")
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    assert lines[-1].startswith(f"error: engine.python={tmp_path / 'no-python'}: not an executable Python")
    assert any(re.fullmatch(r"\s+plan  m  CPU: KV .*", line) for line in lines), lines
    assert not any(re.search(r"\b(INFO|WARNING|DEBUG)\b", line) for line in lines), lines
