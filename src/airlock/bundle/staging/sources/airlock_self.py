"""airlock's own wheel and its runtime dependencies, for the air-gapped side's bootstrap (``pack --with-airlock``).

airlock's wheel is built from the checkout this airlock runs from (``pip wheel --no-deps`` over a
copy of ``pyproject.toml``, ``README.md`` and ``src/``, so the checkout gains no ``build/``), with
``SOURCE_DATE_EPOCH`` fixed so the same source gives the same bytes; or it is the wheel given
(``--airlock-wheel``). Its dependencies are fetched by ``pip download`` for the *target* platform and
Python (the spec's ``wheels:`` section, else this machine), like any other wheels.

Both are cached under ``AIRLOCK_CACHE/bootstrap/``: the wheel by a digest of the source, the
dependencies by a digest of the target and of airlock's requirements. A pack first resolves from
that cache alone (``pip download --no-index``); only what it lacks is fetched from the index. Remove
the folder to resolve afresh.

Example::

    got = collect_airlock(SelfOptions(work_dir=state, cache=Path("~/.cache/airlock/bootstrap")))
    got.wheels  # [airlock-0.1.0-py3-none-any.whl, aiohttp-...whl, ...]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from airlock import __version__
from airlock.bundle.staging.sources.wheels import pip_command, target_of
from airlock.common.fileio import is_temp_name
from airlock.common.wheels import airlock_checkout, build_wheel, source_digest, source_files
from airlock.errors import SourceError
from airlock.spec import WheelsSpec

#: A fixed date for the files in airlock's wheel (1980-01-01, the earliest a zip can hold).
SOURCE_DATE_EPOCH = 315532800
_PIP_TIMEOUT = 3600


@dataclass(frozen=True)
class SelfOptions:
    work_dir: Path  # pack's state folder
    cache: Path  # AIRLOCK_CACHE/bootstrap
    target: WheelsSpec = field(default_factory=WheelsSpec)  # platform, Python and index (no requirements)
    wheel: Path | None = None  # airlock's wheel, built already; None: build it from the checkout
    python: Path | None = None  # the Python whose pip builds and downloads (default: this one)


@dataclass(frozen=True)
class SelfWheels:
    wheels: list[Path]  # airlock's wheel first, then its dependencies by name
    target: str  # "platform=... python=3.11"
    python_version: str  # "3.11": the Python the wheels are for


def collect_airlock(options: SelfOptions) -> SelfWheels:
    python = options.python or Path(sys.executable)
    wheel = options.wheel or _built_wheel(options.cache, python, options.target)
    if not wheel.is_file() or wheel.suffix != ".whl":
        raise SourceError(f"{wheel}: not a wheel file", hint="give airlock's wheel (airlock-*.whl)")
    target = options.target.model_copy(update={"requirements": [], "requirement_files": [], "no_deps": False})
    version = target.python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    dest = options.work_dir / "downloads" / "airlock"
    shutil.rmtree(dest, ignore_errors=True)  # exactly this resolution's wheels, nothing left from another
    dest.mkdir(parents=True)
    _download(wheel, target, options.cache / f"deps-{_target_key(target, wheel)}", dest, python)
    wheels = sorted(
        (p for p in dest.iterdir() if p.is_file() and not is_temp_name(p.name)),
        key=lambda p: (not p.name.startswith("airlock-"), p.name),
    )
    odd = [p.name for p in wheels if p.suffix != ".whl"]
    if odd:
        raise SourceError(f"airlock's dependencies: pip downloaded {odd[0]}, which is not a wheel")
    return SelfWheels(wheels, target_of(target), version)


def _built_wheel(cache: Path, python: Path, target: WheelsSpec) -> Path:
    """airlock's wheel built from its checkout (cached by a digest of the source); its build tools come
    from the target's index (none with ``no_index``: then only from its find_links)."""
    root = airlock_checkout()
    if root is None:
        raise SourceError(
            f"airlock {__version__} is not running from a checkout, so its wheel cannot be built here",
            hint="give airlock's wheel with --airlock-wheel FILE, or pack with --without-airlock",
        )
    out = cache / f"airlock-{__version__}-{source_digest(root, source_files(root))[:16]}"
    built = sorted(out.glob("airlock-*.whl")) if out.is_dir() else []
    if built:
        return built[0]
    work = cache / f".build-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        build_wheel(
            root,
            work,
            python=python,
            epoch=SOURCE_DATE_EPOCH,
            error=SourceError,
            pip_flags=_index_flags(target),
        )
        if not out.exists():
            work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sorted(out.glob("airlock-*.whl"))[0]


def _index_flags(target: WheelsSpec) -> list[str]:
    """pip's index options as the spec's wheels section gives them."""
    flags = [f"--index-url={target.index_url}"] if target.index_url else []
    flags += [f"--extra-index-url={u}" for u in target.extra_index_urls]
    flags += [f"--find-links={u}" for u in target.find_links]
    return [*flags, "--no-index"] if target.no_index else flags


def _requires(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines (its runtime dependencies)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
            text = zf.read(name).decode("utf-8", "replace")
    except (OSError, zipfile.BadZipFile, StopIteration) as exc:
        raise SourceError(f"{wheel}: not a wheel (no readable METADATA)") from exc
    return [line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def _target_key(target: WheelsSpec, wheel: Path) -> str:
    data = {"target": target.model_dump(mode="json"), "requires": _requires(wheel)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _download(wheel: Path, target: WheelsSpec, cache: Path, dest: Path, python: Path) -> None:
    """``pip download`` the wheel and its dependencies into ``dest``: from the cache alone if it can,
    else fetching what the cache lacks from the index first."""
    offline = target.model_copy(
        update={"no_index": True, "find_links": [str(cache)], "index_url": None, "extra_index_urls": []}
    )
    offline_cmd = pip_command(offline.model_copy(update={"requirements": [str(wheel)]}), dest, python)
    if cache.is_dir() and _run(offline_cmd, "", None, check=False):
        return
    cache.mkdir(parents=True, exist_ok=True)
    online = pip_command(target.model_copy(update={"requirements": [str(wheel)]}), cache, python)
    try:
        _run(online, f"download airlock's dependencies for {target_of(target)}", None)
    except SourceError:
        if not any(cache.iterdir()):
            cache.rmdir()  # nothing fetched: the next pack goes straight to the index again
        raise
    _run(offline_cmd, f"gather airlock's dependencies for {target_of(target)}", None)


def _run(cmd: list[str], what: str, env: dict[str, str] | None, *, check: bool = True) -> bool:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceError(f"could not run pip to {what}: {exc}") from exc
    if done.returncode != 0 and check:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise SourceError(
            f"pip could not {what} (exit {done.returncode}): {tail}",
            hint="check the target platform and Python in the spec's wheels: section, and the index",
        )
    return done.returncode == 0
