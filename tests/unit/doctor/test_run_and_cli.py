"""run_doctor on recorded hosts (pass, warn, fail and their exit codes), on this real host, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from airlock.doctor import DoctorOptions, run_doctor
from airlock.doctor.model import EXIT_FAIL, EXIT_PASS, EXIT_WARN
from airlock.doctor.network import parse_ipv6_route, parse_route
from airlock.settings import Settings
from unit.doctor.recorded_host import RecordedHost

AIRLOCK = [sys.executable, "-m", "airlock.cli.main"]


def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", cache=tmp_path / "cache")


def test_a_ready_gpu_host_passes(tmp_path: Path, host: RecordedHost) -> None:
    host.with_gpus("l4").with_docker("docker_info_nvidia.json")
    report = run_doctor(DoctorOptions(), host, settings(tmp_path))
    assert report.worst == "pass", [c for c in report.checks if c.status != "pass"]
    assert report.exit_code == EXIT_PASS
    names = [c.name for c in report.checks]
    for name in ("gpus", "docker", "nvidia container toolkit", "docker nvidia runtime", "/dev/shm", "disk",
                 "store (sizes)", "port 8000", "route out (IPv4)", "route out (IPv6)", "resolver",
                 "proxy variables", "clock", "time sync"):  # fmt: skip
        assert name in names
    assert not host.connected  # no probe asked: no connection tried


def test_warn_and_fail_exit_codes(tmp_path: Path, host: RecordedHost) -> None:
    host.with_gpus("h100x2").with_docker("docker_info_runc.json")  # no nvidia runtime registered
    report = run_doctor(DoctorOptions(), host, settings(tmp_path))
    assert (report.worst, report.exit_code) == ("warn", EXIT_WARN)
    assert report.by_name("docker nvidia runtime").fix.startswith("nvidia-ctk runtime configure")
    host.with_docker("docker_info_daemon_down.json")
    idle = run_doctor(DoctorOptions(), host, settings(tmp_path))  # nothing asks for containers: a warning
    assert idle.by_name("docker").status == "warn"
    spec = tmp_path / "airlock.yaml"
    spec.write_text(
        "models:\n  - name: m\n    hf: {repo: org/m}\n    engine: {kind: vllm, image: 'vllm/vllm-openai:v0.11.0'}\n"
    )
    down = run_doctor(DoctorOptions(spec=spec), host, settings(tmp_path))
    assert (down.worst, down.exit_code) == ("fail", EXIT_FAIL)
    assert down.by_name("docker").status == "fail"
    assert "Cannot connect to the Docker daemon" in down.by_name("docker").detail
    data = json.loads(down.to_json())
    assert data["exit_code"] == EXIT_FAIL and data["counts"]["fail"] >= 1
    assert {"name", "status", "detail", "fix"} <= set(data["checks"][0])


def test_spec_with_a_vllm_image_needs_the_toolkit(tmp_path: Path, host: RecordedHost) -> None:
    spec = tmp_path / "airlock.yaml"
    spec.write_text(
        "models:\n  - name: m\n    hf: {repo: org/m}\n    engine: {kind: vllm, image: 'vllm/vllm-openai:v0.11.0'}\n"
    )
    host.with_docker("docker_info_nvidia.json", toolkit=False)
    report = run_doctor(DoctorOptions(spec=spec), host, settings(tmp_path))
    assert report.by_name("gpus").status == "fail"  # no nvidia-smi, and the spec runs a CUDA image
    assert report.by_name("nvidia container toolkit").status == "fail"


def test_this_host(tmp_path: Path) -> None:
    """The real machine: doctor reports what its own files say (no GPU here; docker is installed)."""
    report = run_doctor(DoctorOptions(store=tmp_path / "store"), settings=settings(tmp_path))
    gpus = report.by_name("gpus")
    if shutil.which("nvidia-smi") is None:
        assert gpus.status == "skip" and "nvidia-smi is not installed" in gpus.detail
    if shutil.which("docker") is not None:
        assert report.by_name("docker").status in ("pass", "warn")  # no spec: a daemon that is down warns
    for path, parse, name in (
        ("/proc/net/route", parse_route, "route out (IPv4)"),
        ("/proc/net/ipv6_route", parse_ipv6_route, "route out (IPv6)"),
    ):
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            has_default = any(r.is_default for r in parse(f.read()))
        assert (report.by_name(name).status == "fail") == has_default


def test_cli_json_and_exit_code(tmp_path: Path) -> None:
    env = {**os.environ, "AIRLOCK_HOME": str(tmp_path / "home"), "AIRLOCK_CACHE": str(tmp_path / "cache")}
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        spec = tmp_path / "airlock.yaml"
        spec.write_text(f"gateway: {{port: {port}}}\nmodels: []\n")
        done = subprocess.run(
            [*AIRLOCK, "doctor", str(spec), "--json"], env=env, capture_output=True, text=True, timeout=120
        )
    data = json.loads(done.stdout)
    assert done.returncode == data["exit_code"] == EXIT_FAIL  # the gateway's port is taken
    port_check = next(c for c in data["checks"] if c["name"] == f"port {port}")
    assert port_check["status"] == "fail"
    table = subprocess.run([*AIRLOCK, "doctor"], env=env, capture_output=True, text=True, timeout=120)
    assert table.returncode in (EXIT_PASS, EXIT_WARN, EXIT_FAIL)
    assert "route out (IPv4)" in table.stdout and f"(exit {table.returncode})" in table.stderr
    bad = subprocess.run(
        [*AIRLOCK, "doctor", "--probe", "example.com:443"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --probe 'example.com:443': give an IP address")


def test_docs_name_every_check(tmp_path: Path, host: RecordedHost) -> None:
    """docs/doctor.md has a row for each check a report can hold (names with their variable part spelled out)."""
    import re

    doc = (Path(__file__).parents[3] / "docs" / "doctor.md").read_text(encoding="utf-8")
    spec = tmp_path / "airlock.yaml"
    spec.write_text(
        "hardware: {gpu: h100-80gb, count: 4, driver: 570.86.15}\n"
        "models:\n  - name: m\n    hf: {repo: org/m}\n    engine: {kind: vllm, tensor_parallel_size: 8}\n"
    )
    host.with_gpus("a100-mig").with_docker("docker_info_runc.json")
    reports = [
        run_doctor(DoctorOptions(spec=spec, probes=("127.0.0.1:9",)), host, settings(tmp_path)),
        run_doctor(DoctorOptions(deep=True), RecordedHost(), settings(tmp_path)),
    ]
    names = {c.name for r in reports for c in r.checks}
    spelled = {
        re.sub(
            r"^(mig gpu|port) \d+$",
            r"\1 N",
            re.sub(r"^probe .*", "probe IP:PORT", re.sub(r"^parallelism .*", "parallelism MODEL", n)),
        )
        for n in names
    }
    missing = sorted(n for n in spelled if f"`{n}`" not in doc)
    assert missing == []
