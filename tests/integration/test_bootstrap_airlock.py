"""airlock carries itself: pack --with-airlock, then on a machine without airlock and without a network,
the first volume's bootstrap.sh installs it into a fresh venv and that airlock verifies the bundle.

airlock's wheel is built from this checkout and its dependencies come from the index on the staging
side, cached under AIRLOCK_CACHE/bootstrap (a rerun resolves from the cache alone). The bootstrap
runs in its own network namespace (``unshare --net``, loopback only) when we are root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.bundle.format import layout
from airlock.bundle.format.sign import generate_keypair
from airlock.bundle.staging.pack import PackOptions, pack
from bundle_helpers import make_staging

pytestmark = pytest.mark.integration
#: The Python this venv was made from: the other side's plain python3 (of the wheels' version).
BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"


def _offline(cmd: list[str]) -> list[str]:
    """``cmd`` in a network namespace with only loopback, where we may make one (root)."""
    if os.geteuid() != 0:
        return cmd
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux's unshare is missing"
    script = 'ip link set lo up 2>/dev/null || true; exec "$@"'
    return [unshare, "--net", "sh", "-c", script, "sh", *cmd]


def test_bootstrap_from_the_first_volume_then_airlock_verify(tmp_path: Path) -> None:
    keys = generate_keypair(tmp_path / "keys" / "staging.key")
    staging = make_staging(tmp_path / "staging")
    result = pack(
        PackOptions(spec_path=staging.spec, out=tmp_path / "bundle", sign_key=keys.private, with_airlock=True)
    )
    boot = result.bootstrap
    assert boot is not None
    folder = result.volumes[0].path / layout.BOOTSTRAP_DIR
    assert hashlib.sha256((folder / layout.BOOTSTRAP_SUMS).read_bytes()).hexdigest() == boot.sums_sha256
    names = {f.path for f in boot.files}
    assert any(n.startswith("airlock-") for n in names) and any(n.startswith("cryptography-") for n in names)

    # the other side: its own HOME, no pip configuration, no network
    home = tmp_path / "site-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "AIRLOCK_"))}
    env |= {"HOME": str(home), "PYTHON": str(BASE_PYTHON), "AIRLOCK_HOME": str(home / "airlock")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    venv = tmp_path / "airlock-venv"
    done = subprocess.run(
        _offline(["sh", str(folder / layout.BOOTSTRAP_SCRIPT), str(venv)]),
        env=env, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{venv}/bin/airlock verify {result.volumes[0].path}" in done.stdout

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import airlock; print(airlock.__file__)"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(venv)), "the bootstrapped airlock, not this checkout's"
    verified = subprocess.run(
        _offline([str(venv / "bin" / "airlock"), "verify", str(result.out), "--trust", str(keys.public)]),
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "bundle verified" in verified.stdout and f"signed by key {keys.key_id}" in verified.stdout
