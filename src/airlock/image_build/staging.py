"""The build's local inputs: checked before anything runs, and placed into the staged root.

``preflight`` refuses what would fail a minute later (not root, a tool missing, a model that is not a
GGUF file, a llama-server that is not executable, an --out that exists) with the next step to take.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import ConfigError, ImageBuildError
from airlock.image_build.options import ImageBuildOptions
from airlock.image_build.steps import need

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class Placed:
    rel: str  # its path in the root
    sha256: str
    size: int


@dataclass(frozen=True)
class LlamaBuild:
    commit: str
    native: str
    files: tuple[tuple[str, Path], ...]  # (name in the image's llama.cpp folder, file): BUILD-INFO, licence


def preflight(options: ImageBuildOptions) -> None:
    """The caller's own inputs first (cheap, and the likeliest mistakes), then the machine."""
    if options.out.exists():
        raise ConfigError(f"--out {options.out} already exists", hint="give a new folder, or remove this one")
    if not options.out.parent.is_dir():
        raise ConfigError(f"--out {options.out}: its folder {options.out.parent} does not exist")
    try:
        with options.model.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ConfigError(f"model {options.model}: cannot be read: {exc.strerror or exc}") from exc
    if magic != GGUF_MAGIC:
        raise ConfigError(f"model {options.model}: not a GGUF file (it begins {magic!r})")
    if not (options.llama_server.is_file() and os.access(options.llama_server, os.X_OK)):
        raise ConfigError(
            f"llama-server {options.llama_server}: not an executable file",
            hint="build it once with scripts/build-llama-server.sh (or `make setup`)",
        )
    if not (options.source / "pyproject.toml").is_file():
        raise ConfigError(
            f"{options.source} is not airlock's checkout (no pyproject.toml)",
            hint="give the checkout with --source",
        )
    if options.lock is not None and not options.lock.is_file():
        raise ConfigError(f"--lock {options.lock}: no such file")
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building the image needs root (mmdebstrap's root mode, chroot into the staged root)",
            hint="run it as root, e.g. sudo -E airlock image build ...",
        )
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("umoci", "umoci"), ("unshare", "util-linux"),
                          ("chroot", "coreutils"), ("tar", "tar")):  # fmt: skip
        need(tool, package)


def llama_build_info(binary: Path) -> LlamaBuild:
    """The llama.cpp commit and build flags that scripts/build-llama-server.sh recorded beside the binary
    ("unknown" for a binary built elsewhere), and the files to carry with it."""
    folder = binary.parent.parent
    info, licence = folder / "BUILD-INFO.json", folder / "LICENSE-llama.cpp"
    try:
        data = json.loads(info.read_text())
    except (OSError, ValueError):
        data = {}
    files = tuple((path.name, path) for path in (info, licence) if path.is_file())
    return LlamaBuild(str(data.get("llama_cpp_commit", "unknown")), str(data.get("native", "unknown")), files)


def place_file(source: Path, root: Path, rel: str, *, mode: int) -> Placed:
    """Copy ``source`` to ``root/rel`` with ``mode``, hashing it on the way."""
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            dst.write(chunk)
    target.chmod(mode)
    return Placed(rel, digest.hexdigest(), size)


def revision(source: Path) -> str:
    """The checkout's commit, ``+dirty`` when tracked files differ from it; "unknown" outside git."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        head = subprocess.run(
            [git, "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            [git, "-C", str(source), "diff", "--quiet", "HEAD"], capture_output=True, check=False
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 1 else "")
