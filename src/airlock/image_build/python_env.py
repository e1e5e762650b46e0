"""The image's Python environment: airlock's wheel built from the checkout, its dependencies as wheels
for the image's Python and glibc, installed into ``/opt/airlock/venv`` inside the staged root.

Wheels are fetched on the host by pip (the staging side is online; ``--only-binary`` so that nothing
is compiled, with the image's platform tags): either exactly those of a lock file (``name==version
--hash=sha256:...``, pip checks every hash), or resolved afresh from airlock's requirements, in which
case the build's summary gives the lock (``requirements_lock``) that repeats them. The install runs inside the root with its own pip, offline
(``--no-index``), ``--require-hashes`` against the hashes taken here, and Python's files are compiled
with SOURCE_DATE_EPOCH set (hash-checked .pyc: the same bytes on every build, no recompiling when the
container starts).
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from airlock.common.fileio import hash_file
from airlock.common.wheels import build_wheel, pinned_requirements
from airlock.errors import ImageBuildError
from airlock.image_build.layers import changed_since, snapshot, walk
from airlock.image_build.steps import in_root, run

VENV = "opt/airlock/venv"
_WHEELS_IN_ROOT = "tmp/airlock-wheels"


@dataclass(frozen=True)
class Wheels:
    folder: Path
    airlock: Path
    dependencies: tuple[Path, ...]

    def hashes(self) -> tuple[tuple[str, str], ...]:
        return tuple((wheel.name, hash_file(wheel).sha256) for wheel in (*self.dependencies, self.airlock))


def requirement_lines(wheels: tuple[Path, ...]) -> str:
    """A requirements file that pins each wheel by name, version and SHA-256 (pip's hash-checking mode)."""
    return pinned_requirements((wheel.name, hash_file(wheel).sha256) for wheel in wheels)


def platform_tags(libc_version: str, machine: str) -> tuple[str, ...]:
    """The manylinux tags a Debian root's glibc runs, newest first, from its libc6 version
    (``2.36-9+deb12u10`` -> ``manylinux_2_36_x86_64`` ... ``manylinux_2_5_x86_64`` and the legacy
    names). pip takes them as given: it does not widen ``--platform`` to older glibc versions."""
    found = re.match(r"^2\.(\d+)", libc_version)
    if found is None:
        raise ImageBuildError(f"libc6 version {libc_version!r}: cannot tell the glibc version")
    minor = int(found.group(1))
    tags = [f"manylinux_2_{n}_{machine}" for n in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{machine}" for n, name in legacy.items() if n <= minor]
    return tuple(tags)


def build_airlock_wheel(source: Path, out: Path, *, epoch: int) -> Path:
    """airlock's wheel from the checkout at ``source`` (:func:`airlock.common.wheels.build_wheel`)."""
    return build_wheel(source, out, python=Path(sys.executable), epoch=epoch, error=ImageBuildError)


def download_wheels(
    airlock_wheel: Path, dest: Path, *, python: str, platforms: tuple[str, ...], lock: Path | None
) -> Wheels:
    """Every wheel airlock needs for ``python`` (``3.11``) on ``platforms``, into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    target = ["--only-binary=:all:", *(f"--platform={tag}" for tag in platforms), "--python-version", python,
              "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}"]  # fmt: skip
    common = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
              "--progress-bar", "off", "-d", str(dest), *target]  # fmt: skip
    if lock is not None:
        run([*common, "--no-deps", "--require-hashes", "-r", str(lock)], step=f"pip download -r {lock}")
        shutil.copy2(airlock_wheel, dest / airlock_wheel.name)
    else:
        run([*common, str(airlock_wheel)], step="pip download (airlock's dependencies)")
    found = sorted(dest.glob("*.whl"))
    others = sorted(set(dest.iterdir()) - set(found))
    if others:
        raise ImageBuildError(
            f"pip fetched {others[0].name}, which is not a wheel", hint="every dependency needs a wheel"
        )
    mine = [w for w in found if w.name == airlock_wheel.name]
    if not mine:
        raise ImageBuildError(f"airlock's wheel {airlock_wheel.name} is missing from {dest}")
    return Wheels(dest, mine[0], tuple(w for w in found if w.name != airlock_wheel.name))


def root_python(root: Path, *, epoch: int) -> str:
    """The staged root's Python as ``3.11``."""
    shown = in_root(root, ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                    step="the Debian root's Python", epoch=epoch).strip()  # fmt: skip
    if not re.fullmatch(r"3\.\d+", shown):
        raise ImageBuildError(f"the Debian root's python3 says {shown!r}, not a version")
    return shown


def install(root: Path, wheels: Wheels, *, python: str, epoch: int) -> tuple[list[str], list[str]]:
    """Make the venv and install into it; the paths of the dependencies' layer and of airlock's own."""
    inside = root / _WHEELS_IN_ROOT
    shutil.rmtree(inside, ignore_errors=True)
    inside.mkdir(parents=True)
    for wheel in (*wheels.dependencies, wheels.airlock):
        shutil.copy2(wheel, inside / wheel.name)
    (inside / "dependencies.txt").write_text(requirement_lines(wheels.dependencies))
    (inside / "airlock.txt").write_text(requirement_lines((wheels.airlock,)))
    venv_python = f"/{VENV}/bin/python"
    site = f"/{VENV}/lib/python{python}/site-packages"
    pip = [venv_python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", f"/{_WHEELS_IN_ROOT}",
           "--require-hashes", "--no-compile", "--no-cache-dir", "--disable-pip-version-check"]  # fmt: skip
    compile_ = [venv_python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "checked-hash"]
    try:
        in_root(
            root,
            ["python3", "-m", "venv", f"/{VENV}"],
            step="python3 -m venv (in the Debian root)",
            epoch=epoch,
        )
        in_root(
            root,
            [*pip, "-r", f"/{_WHEELS_IN_ROOT}/dependencies.txt"],
            step="pip install (dependencies)",
            epoch=epoch,
        )
        in_root(root, [*compile_, f"/{VENV}"], step="compiling the dependencies", epoch=epoch)
        dependencies = list(walk(root, VENV))
        before = snapshot(root, VENV)
        in_root(
            root,
            [*pip, "--no-deps", "-r", f"/{_WHEELS_IN_ROOT}/airlock.txt"],
            step="pip install (airlock)",
            epoch=epoch,
        )
        in_root(root, [*compile_, f"{site}/airlock"], step="compiling airlock", epoch=epoch)
        own = changed_since(root, VENV, before)
    finally:
        shutil.rmtree(inside, ignore_errors=True)
    return dependencies, own
