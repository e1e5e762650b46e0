"""accept check's judgement over a run's replies (a fake run: no namespace, no engine)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from airlock.accept.check import CheckOptions, run_check
from airlock.accept.egress import EgressEvent
from airlock.accept.golden import Answer, GoldenFile, Message, ModelRecord, Prompt, Sampling
from airlock.accept.identity import hardware, listing_digest
from airlock.accept.report import CheckResult, Floors
from airlock.accept.run import Reply, RunRequest, RunResult
from airlock.errors import ConfigError
from airlock.settings import Settings
from airlock.spec import LlamaCppEngineSpec, ModelSpec, RemoteEngineSpec, Spec

GGUF = b"GGUF tiny stand-in"
DIGEST = listing_digest(
    {"m.gguf": hashlib.sha256(GGUF).hexdigest()}
)  # the file's name and hash, as pack lists it


def _spec(folder: Path) -> Spec:
    """A llama.cpp model (never started here: the run is faked) with a stand-in binary and GGUF file."""
    binary = folder / "llama-server"
    binary.write_text("#!/bin/sh\nexit 1\n")
    binary.chmod(0o755)
    (folder / "m.gguf").write_bytes(GGUF)
    engine = LlamaCppEngineSpec(kind="llamacpp", binary=binary)
    return Spec(models=[ModelSpec(name="m", gguf=folder / "m.gguf", engine=engine)])


def _golden(engine_version: str) -> GoldenFile:
    record = ModelRecord(
        name="m", digest=DIGEST, engine="llamacpp", engine_version=engine_version,
        hardware=hardware(),
    )  # fmt: skip
    prompts = [Prompt(id=i, messages=[Message(role="user", content=i)]) for i in ("p1", "p2")]
    answers = [
        Answer(
            prompt="p1",
            model="m",
            text="Paris is the capital.",
            tokens=["Paris", " is", " the", " capital", "."],
        ),
        Answer(prompt="p2", model="m", text="1, 2, 3", tokens=["1", ",", " 2", ",", " 3"]),
    ]
    return GoldenFile(
        created="2026-01-01T00:00:00Z", airlock_version="0.1.0", sampling=Sampling(), models=[record],
        prompts=prompts, answers=answers,
    )  # fmt: skip


def _reply(prompt: str, text: str, tokens: list[str]) -> Reply:
    answer = Answer(prompt=prompt, model="m", text=text, tokens=tokens)
    return Reply(prompt=prompt, model="m", answer=answer, ttft_s=0.2, tokens_per_s=40.0, completion_tokens=5)


def _checks(
    tmp_path: Path, golden: GoldenFile, result: RunResult, floors: Floors | None = None
) -> dict[str, CheckResult]:
    seen: list[RunRequest] = []

    def runner(request: RunRequest) -> RunResult:
        seen.append(request)
        return result

    options = CheckOptions(
        spec=_spec(tmp_path), spec_source="spec", golden=golden, golden_source="g", out=tmp_path
    )
    if floors is not None:
        options = dataclasses.replace(options, floors=floors)
    report = run_check(options, Settings.from_env({"HOME": str(tmp_path)}), runner=runner)
    (request,) = seen
    assert request.pairs == [("p1", "m"), ("p2", "m")]
    assert request.spec.gateway.audit_log == tmp_path / "run" / "audit.jsonl"
    assert request.spec.gateway.host == "127.0.0.1" and not request.spec.gateway.auth
    return {c.name: c for c in report.checks}


def test_same_platform_is_exact_and_names_the_diff(tmp_path: Path) -> None:
    result = RunResult(
        egress_watched=True,
        replies=[
            _reply("p1", "Paris is the capital.", ["Paris", " is", " the", " capital", "."]),
            _reply("p2", "1, 2, 4", ["1", ",", " 2", ",", " 4"]),
        ],
    )
    checks = _checks(tmp_path, _golden("unknown"), result)
    assert checks["stack"].status == "pass"
    assert checks["weights: m"].status == "pass"
    assert checks["answers: m"].status == "pass"
    assert checks["match: m"].status == "fail"
    assert checks["match: m"].detail == (
        "1 of 2 answers differ (exact text): 'p2' differs at character 6 of 7: expected '1, 2, 3', got '1, 2, 4'"
    )
    assert checks["speed: m"].status == "pass"
    assert checks["audit chain"].status == "fail" and "wrote no audit log" in checks["audit chain"].detail
    assert checks["no egress"].status == "pass"


def test_another_engine_version_uses_the_stated_tolerance(tmp_path: Path) -> None:
    result = RunResult(
        egress_watched=True,
        replies=[
            _reply("p1", "Paris is the capital!", ["Paris", " is", " the", " capital", "!"]),
            _reply("p2", "1, 2, 3", ["1", ",", " 2", ",", " 3"]),
        ],
    )
    checks = _checks(
        tmp_path,
        _golden("llama.cpp 0c1e57098bba"),
        result,
        floors=Floors(max_ttft_s=0.1, min_tokens_per_s=50),
    )
    assert checks["match: m"].status == "fail"
    assert "tolerance (version 'llama.cpp 0c1e57098bba' -> 'unknown')" in checks["match: m"].detail
    assert "'p1' 4/5 leading tokens identical (80%): below 90%" in checks["match: m"].detail
    assert checks["speed: m"].status == "fail"
    assert (
        "0.20 s above 0.1 s" in checks["speed: m"].detail
        and "40.0 tokens/s below 50" in checks["speed: m"].detail
    )


def test_egress_silence_and_failed_start_never_pass(tmp_path: Path) -> None:
    offender = EgressEvent(
        kind="connect", proto="tcp", destination="203.0.113.5:443", pid=9, process="phone-home"
    )
    checks = _checks(
        tmp_path, _golden("unknown"), RunResult(egress_watched=True, egress=[offender], error="no start")
    )
    assert checks["stack"] == CheckResult(name="stack", status="fail", detail="no start")
    assert checks["answers: m"].status == "fail" and checks["match: m"].status == "fail"
    assert checks["no egress"].detail == (
        "1 process tried to reach the outside: pid 9 (phone-home): reached 203.0.113.5:443 (tcp)"
    )
    unwatched = _checks(tmp_path, _golden("unknown"), RunResult())
    assert unwatched["no egress"].status == "fail" and "not proven" in unwatched["no egress"].detail


def test_other_weights_fail(tmp_path: Path) -> None:
    golden = _golden("unknown")
    golden = golden.model_copy(
        update={"models": [golden.models[0].model_copy(update={"digest": "sha256:00"})]}
    )
    checks = _checks(tmp_path, golden, RunResult(egress_watched=True))
    assert checks["weights: m"].status == "fail"
    assert checks["weights: m"].detail == f"not the recorded weights: recorded sha256:00, here {DIGEST}"


def test_engines_outside_the_namespace_are_refused(tmp_path: Path) -> None:
    remote = ModelSpec(name="r", engine=RemoteEngineSpec(kind="remote", url="http://10.0.0.5:8000/v1"))
    options = CheckOptions(
        spec=Spec(models=[remote]), spec_source="s", golden=_golden("x"), golden_source="g", out=tmp_path
    )
    with pytest.raises(ConfigError, match="r would run outside it"):
        run_check(options, Settings.from_env({"HOME": str(tmp_path)}), runner=lambda request: RunResult())
