"""Python wheels for the air-gapped hosts, fetched with ``pip download`` for their platform and Python.

pip resolves the requirements for the *target* (``--platform``, ``--python-version``,
``--implementation``, ``--abi``, with ``--only-binary=:all:`` as pip requires then), so a staging
laptop can gather wheels for a Linux GPU server. Downloads land in pack's state folder beside OUT,
``.OUT.airlock-pack/downloads/wheels-<digest of the wheels spec>/``; pip skips files already
there, so an interrupted pack resumes. On the other side::

    pip install --no-index --find-links STORE/wheels vllm
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from airlock.bundle.format import layout
from airlock.bundle.format.manifest import Source
from airlock.bundle.staging.sources.base import Collected, SourceFile, safe_logical
from airlock.common.fileio import is_temp_name
from airlock.errors import SourceError
from airlock.spec import WheelsSpec

WHEELS_ARTIFACT = "wheels"


def pip_command(spec: WheelsSpec, dest: Path, python: Path) -> list[str]:
    cmd = [
        str(python),
        "-m",
        "pip",
        "download",
        "--dest",
        str(dest),
        "--only-binary=:all:",
        "--progress-bar",
        "off",
    ]
    cmd += [f"--platform={p}" for p in spec.platforms]
    if spec.python_version:
        cmd.append(f"--python-version={spec.python_version}")
    if spec.implementation:
        cmd.append(f"--implementation={spec.implementation}")
    cmd += [f"--abi={a}" for a in spec.abis]
    if spec.index_url:
        cmd.append(f"--index-url={spec.index_url}")
    cmd += [f"--extra-index-url={u}" for u in spec.extra_index_urls]
    cmd += [f"--find-links={u}" for u in spec.find_links]
    if spec.no_index:
        cmd.append("--no-index")
    if spec.no_deps:
        cmd.append("--no-deps")
    for req_file in spec.requirement_files:
        cmd += ["-r", str(req_file)]
    return [*cmd, *spec.requirements]


def target_of(spec: WheelsSpec) -> str:
    parts = [
        f"platform={','.join(spec.platforms) or 'this machine'}",
        f"python={spec.python_version or f'{sys.version_info.major}.{sys.version_info.minor}'}",
    ]
    if spec.implementation:
        parts.append(f"implementation={spec.implementation}")
    if spec.abis:
        parts.append(f"abi={','.join(spec.abis)}")
    return " ".join(parts)


def collect_wheels(spec: WheelsSpec, work_dir: Path, *, python: Path | None = None) -> Collected:
    if not spec.requirements and not spec.requirement_files:
        raise SourceError("wheels: list at least one requirement or requirement file")
    digest = hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[
        :16
    ]
    dest = work_dir / layout.PACK_DOWNLOADS / f"wheels-{digest}"
    dest.mkdir(parents=True, exist_ok=True)
    cmd = pip_command(spec, dest, python or Path(sys.executable))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceError(f"wheels: could not run pip: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise SourceError(
            f"wheels: `pip download` failed (exit {done.returncode}): {tail}",
            hint="check the requirements, the target platform and Python, and the index",
        )
    files = []
    for path in sorted(dest.iterdir()):
        if not path.is_file() or is_temp_name(path.name):
            continue
        if path.suffix != ".whl":
            raise SourceError(f"wheels: pip downloaded {path.name}, which is not a wheel")
        safe_logical(path.name, where="wheels")
        files.append(SourceFile(path=path.name, origin=path))
    if not files:
        raise SourceError("wheels: pip downloaded nothing")
    return Collected(
        kind="wheels",
        name=WHEELS_ARTIFACT,
        source=Source(type="pip", detail=target_of(spec)),
        files=tuple(files),
    )
