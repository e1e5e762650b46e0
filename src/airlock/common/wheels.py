"""airlock's own wheel, built from its checkout, and pip requirements pinned by hash.

Both ways airlock carries itself use them: ``pack --with-airlock`` (the first volume's bootstrap) and
``airlock image build`` (the image's Python layer). The wheel is built by ``pip wheel --no-deps`` from
a clean copy of what makes it (``pyproject.toml``, the readme and licence files, ``src/`` without
caches): setuptools' in-tree ``build/`` would keep files deleted from the checkout and package them,
and the checkout gains nothing. ``SOURCE_DATE_EPOCH`` fixes the dates inside, so the same source gives
the same wheel.

Example::

    root = airlock_checkout()
    wheel = build_wheel(root, Path("out"), python=Path(sys.executable), epoch=315532800, error=SourceError)
    Path("requirements.txt").write_text(pinned_requirements([(wheel.name, hash_file(wheel).sha256)]))
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

from airlock.errors import AirlockError

PIP_TIMEOUT_S = 600


def airlock_checkout() -> Path | None:
    """The source tree this airlock runs from, where it is a checkout (a pyproject.toml naming airlock)."""
    root = Path(__file__).resolve().parents[3]  # src/airlock/common/wheels.py
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or not (root / "src" / "airlock" / "__init__.py").is_file():
        return None
    try:
        name = tomllib.loads(pyproject.read_text()).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if name == "airlock" else None


def source_files(root: Path) -> list[str]:
    """What the wheel is built from: pyproject.toml, the readme and licence files, and src/ (no caches)."""
    top = [p.name for p in sorted(root.iterdir()) if p.is_file()]
    keep = [n for n in top if n == "pyproject.toml" or n.startswith(("README", "LICEN", "NOTICE", "COPYING"))]
    src = [
        p.relative_to(root).as_posix()
        for p in sorted((root / "src").rglob("*"))
        if p.is_file()
        and "__pycache__" not in p.parts
        and not any(part.endswith(".egg-info") for part in p.parts)
        and p.suffix not in (".pyc", ".pyo")
    ]
    return keep + src


def source_digest(root: Path, files: Iterable[str]) -> str:
    """A digest of the files' names and bytes: the same source, the same digest (a cache key)."""
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()


def build_wheel(
    root: Path,
    out: Path,
    *,
    python: Path,
    epoch: int,
    error: type[AirlockError],
    pip_flags: Sequence[str] = (),
) -> Path:
    """Build the wheel of the checkout at ``root`` into ``out`` (created) with ``python``'s pip; return
    it. ``pip_flags`` say where pip finds the build tools (index options); a failure raises ``error``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".wheel-source-") as tmp:
        copy = Path(tmp)
        for rel in source_files(root):
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, copy / rel)
        cmd = [str(python), "-m", "pip", "wheel", "--no-deps", "--progress-bar", "off",
               "--disable-pip-version-check", *pip_flags, "--wheel-dir", str(out), str(copy)]  # fmt: skip
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT_S,
                check=False,
                env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise error(f"could not run pip to build airlock's wheel: {exc}") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
            raise error(f"pip could not build airlock's wheel (exit {done.returncode}): {tail}")
    built = sorted(out.glob("airlock-*.whl"))
    if len(built) != 1:
        raise error(f"building airlock's wheel left {len(built)} wheels in {out}, not one")
    return built[0]


def pinned_requirements(wheels: Iterable[tuple[str, str]]) -> str:
    """A pip requirements file pinning each wheel (file name, SHA-256) by name, version and hash, for
    ``pip install --no-index --require-hashes``; sorted by file name."""
    from packaging.utils import parse_wheel_filename

    lines = []
    for name, sha256 in sorted(wheels, key=lambda w: w[0].lower()):
        dist, version, _, _ = parse_wheel_filename(name)
        lines.append(f"{dist}=={version} --hash=sha256:{sha256}\n")
    return "".join(lines)
