"""Supervision with real child processes (the fake engine): readiness, failed starts, deaths, hangs."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import openai
import pytest
import uvloop

from airlock.engines.base import EngineConfig, Launch, engine_env, free_port
from airlock.engines.supervisor import EngineState, Supervisor
from airlock.errors import EngineStartError
from harness import GatewayThread, fake_engine_config


def _chat(url: str, content: str = "hello") -> httpx.Response:
    body = {"model": "fake", "messages": [{"role": "user", "content": content}], "max_tokens": 2}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=10)


def _wait(predicate, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_waits_for_readiness_before_serving(tmp_path: Path) -> None:
    config = fake_engine_config(startup_delay=1.0)
    with GatewayThread([config], tmp_path) as gw:
        states = [e.state for e in gw.events if not e.progress]
        assert states == [EngineState.STARTING, EngineState.READY]  # ready before the gateway listened
        (ready,) = [e for e in gw.events if e.state is EngineState.READY]
        assert ready.elapsed_s >= 1.0  # the supervisor's own record: it waited out the engine's start
        assert _chat(gw.url).status_code == 200


def test_slow_start_reports_progress_with_the_logs_last_line(tmp_path: Path) -> None:
    config = fake_engine_config(startup_delay=1.3)
    with GatewayThread([config], tmp_path, progress_every_s=0.5) as gw:
        notes = [e for e in gw.events if e.progress]
        assert notes, "a start longer than progress_every_s should report progress"
        assert notes[0].state is EngineState.STARTING
        assert notes[0].elapsed_s >= 0.5
        assert "airlock.testing.fake_engine" in notes[0].message  # the log's header line names the command


def test_killed_engine_answers_503_then_is_restarted(tmp_path: Path) -> None:
    config = fake_engine_config(startup_delay=1.0)
    with GatewayThread([config], tmp_path, health_interval_s=0.2) as gw:
        runtime = gw.supervisor.engines["fake"]
        first_pid = runtime.pid
        assert first_pid is not None
        os.killpg(first_pid, signal.SIGKILL)
        _wait(lambda: runtime.state is EngineState.RESTARTING, what="the restart to begin")
        r = _chat(gw.url)
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "model_unavailable"
        assert httpx.get(gw.url + "/ready").status_code == 503
        _wait(lambda: runtime.ready, what="the engine to come back")
        assert runtime.pid not in (None, first_pid)
        assert _chat(gw.url).status_code == 200
        assert runtime.restarts == 1
        assert (
            'airlock_engine_restarts_total{engine="fake",kind="fake"} 1.0'
            in httpx.get(gw.url + "/metrics").text
        )


def test_engine_crashing_mid_request_gives_503_not_500(tmp_path: Path) -> None:
    with GatewayThread([fake_engine_config()], tmp_path) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": "please crash"}]
            )
        assert info.value.status_code == 503
        runtime = gw.supervisor.engines["fake"]
        _wait(lambda: runtime.restarts >= 1 and runtime.ready, what="the restart")
        assert client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "x"}]
        ).choices


def test_hung_engine_is_killed_and_restarted(tmp_path: Path) -> None:
    with GatewayThread([fake_engine_config()], tmp_path, health_interval_s=0.2, health_timeout_s=0.3) as gw:
        runtime = gw.supervisor.engines["fake"]
        pid = runtime.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
        _wait(lambda: runtime.restarts >= 1 and runtime.ready, what="the hung engine to be replaced")
        assert runtime.pid != pid
        assert any("health failed" in e.message for e in gw.events)
        assert _chat(gw.url).status_code == 200


def _start_only(config: EngineConfig, tmp_path: Path) -> EngineStartError:
    supervisor = Supervisor([config], log_dir=tmp_path)

    async def go() -> None:
        await supervisor.start()

    with pytest.raises(EngineStartError) as info:
        uvloop.run(go())
    assert supervisor.engines[config.name].state is EngineState.STOPPED
    return info.value


def test_engine_that_exits_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    script = "import sys; print('loading weights...'); print('CUDA out of memory: tried to allocate 80 GiB', file=sys.stderr); sys.exit(3)"
    config = EngineConfig(
        name="broken", kind="fake", base_url="http://127.0.0.1:9", upstream_model="broken",
        launch=Launch(argv=(sys.executable, "-c", script), env=engine_env({})), startup_timeout_s=10,
    )  # fmt: skip
    err = _start_only(config, tmp_path)
    assert "exited with code 3 before it was ready" in err.message
    assert "CUDA out of memory" in err.log_tail
    assert "loading weights" in err.log_tail


def test_engine_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    config = fake_engine_config("slow", startup_delay=60, startup_timeout_s=1.5)
    err = _start_only(config, tmp_path)
    assert "was not ready after 1.5 s" in err.message
    assert "answered 503" in err.message


def test_missing_binary_is_a_start_error(tmp_path: Path) -> None:
    config = EngineConfig(
        name="ghost", kind="fake", base_url="http://127.0.0.1:9", upstream_model="ghost",
        launch=Launch(argv=(str(tmp_path / "no-such-binary"),), env={}),
    )  # fmt: skip
    err = _start_only(config, tmp_path)
    assert "cannot start" in err.message and "no-such-binary" in err.message


def test_engines_get_the_offline_environment_and_not_airlocks_secrets() -> None:
    env = engine_env(
        {"HF_HUB_OFFLINE": "0", "EXTRA": "1"},
        base={"PATH": "/bin", "AIRLOCK_HOME": "/x", "OPENAI_API_KEY": "s"},
    )
    assert env["HF_HUB_OFFLINE"] == "1"  # a spec cannot turn it off
    assert (
        env["TRANSFORMERS_OFFLINE"] == "1"
        and env["VLLM_NO_USAGE_STATS"] == "1"
        and env["DO_NOT_TRACK"] == "1"
    )
    assert env["EXTRA"] == "1" and env["PATH"] == "/bin"
    assert "AIRLOCK_HOME" not in env and "OPENAI_API_KEY" not in env


def test_stop_terminates_the_whole_process_group(tmp_path: Path) -> None:
    with GatewayThread([fake_engine_config()], tmp_path) as gw:
        pid = gw.supervisor.engines["fake"].pid
        assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_log_tail_of_a_failed_start_is_of_that_start_only(tmp_path: Path) -> None:
    # One log file collects every run: an earlier, successful run's lines are not this failure's tail.
    (tmp_path / "broken.log").write_text("earlier run: listening on 127.0.0.1:8080, all good\n")
    script = "import sys; print('this run: bad magic', file=sys.stderr); sys.exit(1)"
    config = EngineConfig(
        name="broken", kind="fake", base_url="http://127.0.0.1:9", upstream_model="broken",
        launch=Launch(argv=(sys.executable, "-c", script), env=engine_env({})), startup_timeout_s=10,
    )  # fmt: skip
    err = _start_only(config, tmp_path)
    assert "this run: bad magic" in err.log_tail
    assert "earlier run" not in err.log_tail
    assert err.log_tail.startswith("=== airlock ")  # the run's own header line, no blank line before it
    assert "earlier run" in (tmp_path / "broken.log").read_text()  # the log itself keeps every run


def _remote(name: str, port: int, startup_timeout_s: float = 600.0) -> EngineConfig:
    return EngineConfig(
        name=name, kind="remote", base_url=f"http://127.0.0.1:{port}", upstream_model=name, launch=None,
        health_path=None, startup_timeout_s=startup_timeout_s, version="remote",
    )  # fmt: skip


def test_a_remote_that_refuses_the_connection_fails_at_once(tmp_path: Path) -> None:
    # Nothing listens on a port just freed: the refusal is known at once, whatever startup_timeout_s
    # says (600 s here: waiting it out would time the test out rather than pass it).
    err = _start_only(_remote("far", free_port()), tmp_path)
    assert "engine 'far' (remote): cannot connect to http://127.0.0.1:" in err.message
    assert "connection refused (nothing listens there)" in err.message
    assert "was not ready after" not in err.message
    assert err.hint is not None and "engine.url" in err.hint and "startup_timeout_s" not in err.hint


def test_serves_what_is_ready_and_retries_the_rest(tmp_path: Path) -> None:
    # 'late' fails its first start (its binary is not there yet) and starts on a retry; 'far' is a
    # remote that refuses the connection. Without require_all, 'fake' is served meanwhile.
    marker = tmp_path / "second-try"
    late = fake_engine_config("late")
    assert late.launch is not None
    guard = f"if [ -e {marker} ]; then exec \"$@\"; fi; touch {marker}; echo 'first try fails' >&2; exit 1"
    late = replace(late, launch=replace(late.launch, argv=("sh", "-c", guard, "sh", *late.launch.argv)))
    configs = [fake_engine_config(), late, _remote("far", free_port())]
    with GatewayThread(configs, tmp_path, require_all=False) as gw:
        assert gw.listening is not None
        assert gw.listening.models == ["fake"]
        assert gw.listening.waiting == ["late", "far"]
        assert _chat(gw.url).status_code == 200
        far = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "far", "messages": [{"role": "user", "content": "x"}]},
            timeout=10,
        )
        assert far.status_code == 503 and far.json()["error"]["code"] == "model_unavailable"
        assert "not ready yet" in far.json()["error"]["message"] and int(far.headers["retry-after"]) >= 1
        ready = httpx.get(gw.url + "/ready")
        assert ready.status_code == 503
        assert ready.json()["engines"]["far"]["state"] == "failed"
        assert ready.json()["engines"]["fake"]["state"] == "ready"
        runtime = gw.supervisor.engines["late"]
        _wait(lambda: runtime.ready, what="the engine that failed its first start to come up on a retry")
        assert [m["id"] for m in httpx.get(gw.url + "/v1/models").json()["data"]] == ["fake", "late"]
    failed = [e for e in gw.events if e.state is EngineState.FAILED]
    assert {e.engine for e in failed} == {"late", "far"}


def test_require_all_or_nothing_ready_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EngineStartError, match="connection refused"):
        GatewayThread([fake_engine_config(), _remote("far", free_port())], tmp_path, require_all=True).start()
    with pytest.raises(EngineStartError, match="connection refused"):  # no model ready: nothing to serve
        GatewayThread([_remote("far", free_port())], tmp_path, require_all=False).start()
