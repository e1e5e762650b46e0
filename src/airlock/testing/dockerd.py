"""A real dockerd for tests, cut off from the network: it runs in ``unshare --net`` with only loopback
up, on the vfs storage driver without iptables or a bridge, with its own data root, exec root, pid file
and unix socket under a temp folder (see ../shared/FIELD-NOTES.md, "Containers and registries").

It needs root (we are, in CI and here); it starts in about 3-4 s, so tests that use it are integration
tests.

Example::

    with running_dockerd() as docker_host:
        subprocess.run(["docker", "-H", docker_host, "images"])
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def running_dockerd(
    *, dockerd: str = "dockerd", docker: str = "docker", timeout: float = 60.0
) -> Iterator[str]:
    """Start a dockerd, yield its ``DOCKER_HOST`` (``unix:///tmp/airlock-dockerd-.../docker.sock``),
    stop it and remove its folder on exit."""
    exe = shutil.which(dockerd)
    client = shutil.which(docker)
    if exe is None or client is None:
        raise FileNotFoundError(f"{dockerd} or {docker} is not installed (Debian package docker.io)")
    # a short folder under /tmp: unix socket paths (and containerd's, under the exec root) stay < 108 bytes
    root = Path(tempfile.mkdtemp(prefix="airlock-dockerd-", dir="/tmp"))
    host = f"unix://{root}/docker.sock"
    argv = [
        exe,
        "--storage-driver=vfs",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--data-root={root}/data",
        f"--exec-root={root}/exec",
        f"--pidfile={root}/docker.pid",
        f"--host={host}",
    ]
    script = 'ip link set lo up && exec "$@"'
    log = (root / "dockerd.log").open("wb")
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", script, "sh", *argv], stdout=log, stderr=log)
    log.close()
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"dockerd exited with {proc.returncode}: {(root / 'dockerd.log').read_text(errors='replace')[-2000:]}"
                )
            done = subprocess.run(
                [client, "-H", host, "version", "--format", "{{.Server.Version}}"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"dockerd did not answer on {host} in {timeout:.0f} s")
            time.sleep(0.1)
        yield host
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    """dockerd leaves mounts under its exec root (``exec/netns/default``, an nsfs bind): unmount them,
    deepest first, so the folder can be removed."""
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as info:
        points = [line.split()[4] for line in info if line.split()[4].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def docker(host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``docker -H host ARGS``, its output captured as text."""
    return subprocess.run(
        ["docker", "-H", host, *args], capture_output=True, text=True, check=check, timeout=300
    )


def daemon_pid(host: str) -> str:
    """The pid of the dockerd at ``host`` (its pid file sits by its socket)."""
    return (Path(host.removeprefix("unix://")).parent / "docker.pid").read_text().strip()


def in_daemon_netns(host: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the network namespace of the dockerd at ``host``: where its containers with
    ``--network host`` listen, on loopback."""
    return subprocess.run(
        ["nsenter", f"--net=/proc/{daemon_pid(host)}/ns/net", *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


_CLIENT = """
import json, sys, urllib.error, urllib.request
url, token, body = sys.argv[1], sys.argv[2], sys.argv[3]
headers = {"Content-Type": "application/json"}
if token:
    headers["Authorization"] = "Bearer " + token
request = urllib.request.Request(url, data=body.encode() or None, headers=headers)
try:
    with urllib.request.urlopen(request, timeout=120) as answer:
        print(json.dumps({"status": answer.status, "body": answer.read().decode()}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "body": exc.read().decode()}))
except OSError as exc:
    print(json.dumps({"status": 0, "body": str(exc)}))
"""


def request_in_daemon_netns(
    host: str, url: str, *, token: str = "", body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An HTTP request made from inside the daemon's network namespace: ``{"status", "body"}``
    (status 0 when the connection failed)."""
    argv = [sys.executable, "-c", _CLIENT, url, token, json.dumps(body) if body is not None else ""]
    found: dict[str, Any] = json.loads(in_daemon_netns(host, argv).stdout)
    return found
