"""airlock accept with the real llama-server and the default model: record, then check on the same
machine (exact text, signed report); a tampered golden file and an engine that phones home fail,
naming the diff, the process and its destination. The offender runs only inside the check's
loopback-only namespace, where nothing can leave the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airlock.bundle.format.sign import generate_keypair
from airlock.serving.default_model import locate_default_model
from airlock.settings import Settings
from harness import need

pytestmark = pytest.mark.integration

PROMPTS = [
    {"id": "capital", "prompt": "What is the capital of France? Answer in one sentence."},
    {"id": "count", "prompt": "Count from one to five.", "max_tokens": 12},
]

# Floors no machine misses: speed is not what these tests judge (no wall-clock bounds in tests; the
# floors' logic is tested in tests/unit/accept/test_check.py), the figures must be there all the same.
LAX = ("--max-ttft-s", "600", "--min-tokens-per-s", "0")

# A llama-server that phones home before it starts: a child process looks up huggingface.co and
# opens a TCP connection to 203.0.113.5:443 (TEST-NET-3), then the real server takes over.
OFFENDER = """#!{python}
import os, subprocess, sys
CODE = '''
import socket
try:
    socket.getaddrinfo("huggingface.co", 443)
except OSError:
    pass
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("203.0.113.5", 443))
except OSError:
    pass
'''
subprocess.Popen([sys.executable, "-c", CODE, "phone-home"])
os.execv({server!r}, [{server!r}, *sys.argv[1:]])
"""


def _airlock(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIRLOCK_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "airlock.cli.main", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip


def _spec(path: Path, gguf: Path, binary: Path) -> Path:
    engine = {"kind": "llamacpp", "binary": str(binary), "parallel": 1, "ctx_size": 2048, "threads": 2}
    path.write_text(yaml.safe_dump({"models": [{"name": "smollm2", "gguf": str(gguf), "engine": engine}]}))
    return path


@pytest.fixture(scope="module")
def recorded(llama_server: Path, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir with airlock.yaml, golden.json (recorded here) and site.key."""
    for tool in ("unshare", "ip", "mount"):
        need(tool)
    work = tmp_path_factory.mktemp("accept")
    _spec(work / "airlock.yaml", locate_default_model(settings), llama_server)
    (work / "golden.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    done = _airlock("accept", "record", "airlock.yaml", "--prompts", "golden.jsonl", "--out", "golden.json",
                    "--max-tokens", "16", cwd=work, home=work / "home")  # fmt: skip
    assert done.returncode == 0, done.stderr
    generate_keypair(work / "site.key")
    return work


def test_record_then_check_passes_exactly_and_the_report_verifies(recorded: Path) -> None:
    golden = json.loads((recorded / "golden.json").read_text())
    assert [a["prompt"] for a in golden["answers"]] == ["capital", "count"]
    assert "Paris" in golden["answers"][0]["text"]
    (model,) = golden["models"]
    assert model["digest"].startswith("sha256:") and model["engine_version"].startswith("llama.cpp ")
    done = _airlock("accept", "check", "airlock.yaml", "--golden", "golden.json", "--key", "site.key",
                    "--out", "report", *LAX, cwd=recorded, home=recorded / "home")  # fmt: skip
    report = json.loads((recorded / "report" / "report.json").read_text())
    assert done.returncode == 0, (done.stderr, report["checks"])
    assert report["outcome"] == "pass"
    assert {c["name"]: c["status"] for c in report["checks"]} == {
        "stack": "pass", "weights: smollm2": "pass", "answers: smollm2": "pass", "match: smollm2": "pass",
        "speed: smollm2": "pass", "audit chain": "pass", "no egress": "pass",
    }  # fmt: skip
    assert [a["mode"] for a in report["answers"]] == ["exact", "exact"]
    (figures,) = report["figures"]
    assert figures["answers"] == 2 and figures["ttft_s_median"] > 0 and figures["tokens_per_s_median"] > 0
    assert report["egress"] == [] and report["dns_lookups"] == 0
    verified = _airlock("accept", "verify-report", "report/report.json", "--trust", "site.key.pub",
                        cwd=recorded, home=recorded / "home")  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert "report.json, report.html signed by key" in verified.stdout and "outcome pass" in verified.stdout
    html = recorded / "report" / "report.html"
    html.write_text(html.read_text().replace("PASS", "PASSED"))
    tampered = _airlock("accept", "verify-report", "report/report.json", "--trust", "site.key.pub",
                        cwd=recorded, home=recorded / "home")  # fmt: skip
    assert tampered.returncode == 12
    assert "report.html: the signature does not match" in tampered.stderr


def test_tampered_golden_and_an_engine_that_phones_home_fail(recorded: Path, llama_server: Path) -> None:
    golden = json.loads((recorded / "golden.json").read_text())
    expected = golden["answers"][0]["text"]
    golden["answers"][0]["text"] = expected.replace("Paris", "Lyon")
    golden["answers"][0]["tokens"] = [t.replace("Paris", "Lyon") for t in golden["answers"][0]["tokens"]]
    (recorded / "tampered.json").write_text(json.dumps(golden))
    offender = recorded / "phone-home-llama-server"
    offender.write_text(OFFENDER.format(python=sys.executable, server=str(llama_server)))
    offender.chmod(0o755)
    spec = _spec(recorded / "offender.yaml", locate_default_model(Settings.from_env()), offender)
    done = _airlock("accept", "check", spec.name, "--golden", "tampered.json", "--key", "site.key",
                    "--out", "report-fail", *LAX, cwd=recorded, home=recorded / "home")  # fmt: skip
    assert done.returncode == 40, done.stderr
    assert "acceptance failed: match: smollm2, no egress" in done.stderr
    report = json.loads((recorded / "report-fail" / "report.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    # the engine's version differs (the wrapper has no BUILD-INFO), so the stated tolerance applies
    match = checks["match: smollm2"]["detail"]
    assert "1 of 2 answers differ (tolerance (version" in match
    assert "'capital'" in match and "expected '" in match and "Lyon" in match and "Paris" in match
    egress = checks["no egress"]["detail"]
    assert "phone-home" in egress
    assert "looked up huggingface.co" in egress
    assert "reached 203.0.113.5:443 (tcp)" in egress
    phone = [e for e in report["egress"] if "phone-home" in (e["process"] or "")]
    assert {e["kind"] for e in phone} >= {"dns", "packet", "connect"}
    assert all(e["pid"] for e in phone)
    assert checks["stack"]["status"] == "pass" and checks["audit chain"]["status"] == "pass"
