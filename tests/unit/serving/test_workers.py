"""``serve --workers``: several gateway processes on one port, the engines supervised once by the
parent; keys, limits, metrics and the audit chain stay right across them; a dead worker comes back;
SIGTERM stops all of them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from airlock.errors import ConfigError
from airlock.gateway.apikeys import KeyLimits, KeyStore
from airlock.gateway.audit_verify import verify
from airlock.serving.stack import ServeOptions
from airlock.serving.workers import worker_share
from airlock.spec import GatewaySpec, parse_spec
from gateway_procs import CHAT, burst, chat
from serve_procs import StartGateway, wait_for


def _requests_counted(url: str) -> float:
    """Every worker's airlock_requests_total for the chat route, from one /metrics answer."""
    text = httpx.get(url + "/metrics", timeout=10).text
    pattern = r'^airlock_requests_total\{[^}]*route="/v1/chat/completions"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def _engine(url: str) -> dict[str, object]:
    engine: dict[str, object] = httpx.get(url + "/ready", timeout=10).json()["engines"]["tiny"]
    return engine


def test_two_workers_share_keys_limits_metrics_and_the_audit_chain(
    gateway_proc: StartGateway, tmp_path: Path
) -> None:
    db = tmp_path / "keys.db"
    _, token = KeyStore(db).create("team", limits=KeyLimits(rpm=7))
    audit = tmp_path / "audit" / "audit.jsonl"
    gw = gateway_proc(GatewaySpec(workers=2, metrics_auth=False, audit_log=audit), db=db)
    workers = gw.workers()
    assert len(workers) == 2
    assert len(gw.children()) == 3  # the engine runs once, in the parent

    # exact across the workers: 20 at once on fresh connections against rpm 7 admit exactly 7 (rpm
    # counts in fixed UTC minutes: the burst starts early in one so that it cannot straddle two)
    if time.time() % 60 > 40:
        time.sleep(60.5 - time.time() % 60)
    minute = int(time.time() // 60)
    answers = asyncio.run(burst([gw.url], token, 20, chat()))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 7 + [429] * 13
    assert _requests_counted(gw.url) == 20  # one view, whichever worker answers

    # a worker that dies is started again; what it counted stays counted (once its audit batch is out)
    wait_for("the burst in the audit log", lambda: _chat_lines(audit) == 20)
    os.kill(workers[0], signal.SIGKILL)
    wait_for("a new worker", lambda: len(gw.workers()) == 2 and workers[0] not in gw.workers())
    assert workers[1] in gw.workers()
    wait_for("the new worker listening", lambda: httpx.get(gw.url + "/health", timeout=5).status_code == 200)
    assert _requests_counted(gw.url) == 20

    # the engines' states reach every worker: the engine dies, the parent restarts it
    engine = next(p for p in gw.children() if p not in gw.workers())
    os.kill(engine, signal.SIGKILL)
    wait_for("the restart seen by the workers", lambda: _engine(gw.url)["restarts"] == 1)
    wait_for("ready again", lambda: _engine(gw.url)["state"] == "ready")
    sent_in = int(time.time() // 60)
    again = httpx.post(gw.url + CHAT, json=chat(), headers={"Authorization": f"Bearer {token}"}, timeout=30)
    answered_in = int(time.time() // 60)
    if answered_in == minute:
        assert again.status_code == 429  # still this minute's limit, in every worker
        assert again.json()["error"]["param"] == "rpm"
    elif sent_in > minute:  # a slow machine reached the next minute: a new window, admitted
        assert again.status_code == 200, again.text
    # (sent in the burst's minute, answered in the next: either window may have admitted it)

    # SIGTERM: every worker stops, then the engine; the audit log is one unbroken chain
    alive = gw.children()
    assert gw.stop() == 0
    assert not [p for p in alive if Path(f"/proc/{p}").exists() and b"Z" not in _state(p)]
    report = verify([audit])
    assert report.ok, report.problems
    assert _chat_lines(audit) == 21


def _chat_lines(audit: Path) -> int:
    text = audit.read_text() if audit.exists() else ""
    return sum('"route":"/v1/chat/completions"' in line for line in text.splitlines())


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().split(b")")[-1][:3]
    except FileNotFoundError:
        return b"Z"


def test_a_worker_that_cannot_start_fails_the_serve(gateway_proc: StartGateway, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(AssertionError, match="the gateway did not start"):
        gateway_proc(GatewaySpec(workers=2), db=blocker / "keys.db")


@pytest.mark.parametrize(("value", "workers", "share"), [(256, 2, 128), (5, 2, 3), (1, 4, 1), (0, 3, 0)])
def test_per_engine_limits_are_split_between_workers(value: int, workers: int, share: int) -> None:
    assert worker_share(value, workers) == share


@pytest.mark.parametrize("workers", [0, 257])
def test_the_workers_flag_is_checked_before_anything_starts(workers: int) -> None:
    spec = parse_spec(
        {"models": [{"name": "r", "engine": {"kind": "remote", "url": "http://127.0.0.1:9/v1"}}]}
    )
    with pytest.raises(ConfigError) as info:
        ServeOptions(spec=spec, workers=workers)
    assert info.value.message == f"--workers {workers}: not a number of workers"
    assert info.value.exit_code == 2
