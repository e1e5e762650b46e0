"""What ``build_image`` takes and gives: :class:`ImageBuildOptions` in, :class:`BuiltImage` out.

The options are checked when made (a tag, a Debian package name, a port), so a wrong flag fails before
a minute of building; files are checked when the build starts (:func:`airlock.image_build.build.preflight`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import parse_wheel_filename

from airlock.errors import ConfigError

#: Debian packages of the root: Python (with venv, for the environment airlock runs in) and what
#: llama-server links against beyond libc (``ldd``: libgomp, libstdc++, libgcc_s).
DEFAULT_PACKAGES: tuple[str, ...] = ("python3-minimal", "python3-venv", "libgomp1", "libstdc++6")
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRRORS: tuple[str, ...] = (
    "deb http://deb.debian.org/debian {suite} main",
    "deb http://deb.debian.org/debian {suite}-updates main",
    "deb http://deb.debian.org/debian-security {suite}-security main",
)
DEFAULT_PORT = 8080
#: The unprivileged user the gateway runs as in the container (no entry in /etc/passwd needed).
RUN_UID = 10001

# OCI's ref name grammar for a tag in an image layout (what umoci and skopeo accept after DIR:)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
# Debian policy 5.6.1: lower case letters, digits, + - . ; at least two characters, alphanumeric first
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_SUITE = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class ImageBuildOptions:
    """One image build: every input named, nothing looked up behind the caller's back.

    ``model`` and ``llama_server`` are the files to carry (the CLI finds the defaults: the embedded
    model and the cached llama-server build); ``source`` is the airlock checkout whose wheel goes in;
    ``cache`` holds the Debian root tarballs (keyed by their package list) and downloaded wheels.
    """

    out: Path
    model: Path
    llama_server: Path
    source: Path
    cache: Path
    tag: str = "latest"
    suite: str = DEFAULT_SUITE
    mirrors: tuple[str, ...] = DEFAULT_MIRRORS
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    source_date_epoch: int = 0
    port: int = DEFAULT_PORT
    lock: Path | None = None  # a requirements file pinned by hash; else the running environment's versions
    refresh_debian: bool = False  # build the Debian root again (security updates) even when cached

    def __post_init__(self) -> None:
        if not _TAG.match(self.tag):
            raise ConfigError(
                f"--tag {self.tag!r}: not a tag",
                hint="letters, digits, '.', '_' and '-', at most 128, not starting with '.' or '-'",
            )
        if not _SUITE.match(self.suite):
            raise ConfigError(f"suite {self.suite!r}: not a Debian suite name", hint="e.g. bookworm")
        bad = [p for p in self.packages if not _PACKAGE.match(p)]
        if bad:
            raise ConfigError(
                f"Debian package {bad[0]!r}: not a package name",
                hint="lower-case letters, digits, '+', '-' and '.', e.g. libgomp1",
            )
        if not self.packages:
            raise ConfigError("no Debian packages to install", hint="keep at least python3-venv")
        if self.source_date_epoch < 0:
            raise ConfigError(
                f"SOURCE_DATE_EPOCH {self.source_date_epoch}: before 1970",
                hint="seconds since 1970-01-01 UTC, e.g. `git log -1 --format=%ct`",
            )
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port {self.port}: not a port number", hint="use 1 to 65535, e.g. 8080")
        if not self.mirrors:
            raise ConfigError("no Debian mirror", hint="give at least one 'deb URL SUITE COMPONENT' line")


@dataclass(frozen=True)
class Layer:
    """One layer as built: its role, the uncompressed tar's digest (diff ID), the blob's digest and size."""

    name: str
    diff_id: str
    digest: str
    size: int  # compressed, as stored and carried
    uncompressed: int


@dataclass(frozen=True)
class Contents:
    """What the image holds, for its labels and the summary."""

    airlock_version: str
    airlock_revision: str  # the checkout's commit ("unknown" outside git; "+dirty" with local changes)
    debian_suite: str
    debian_epoch: int  # SOURCE_DATE_EPOCH of the cached Debian root
    debian_packages: tuple[tuple[str, str], ...]  # (name, version), sorted
    python_version: str
    python_packages: tuple[tuple[str, str], ...]  # (name, version), sorted
    wheel_hashes: tuple[tuple[str, str], ...]  # (wheel file name, sha256)
    llama_cpp_commit: str
    llama_cpp_native: str  # "ON": built for the build machine's CPU only
    model_file: str
    model_sha256: str
    model_size: int

    def requirements_lock(self) -> str:
        """The dependencies' wheels as a requirements file pinned by hash: ``--lock`` takes it and
        installs exactly these again (airlock's own wheel is built from the checkout each time)."""
        lines = []
        for wheel, sha256 in sorted(self.wheel_hashes, key=lambda item: item[0].lower()):
            name, version, _, _ = parse_wheel_filename(wheel)
            if name != "airlock":
                lines.append(f"{name}=={version} --hash=sha256:{sha256}")
        return "".join(f"{line}\n" for line in lines)


@dataclass(frozen=True)
class BuiltImage:
    layout: Path
    tag: str
    manifest_digest: str
    config_digest: str
    layers: tuple[Layer, ...]
    labels: dict[str, str]
    contents: Contents
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    seconds: dict[str, float] = field(default_factory=dict)  # time per step

    @property
    def reference(self) -> str:
        """The image as skopeo names it: ``oci:DIR:TAG``."""
        return f"oci:{self.layout}:{self.tag}"

    def summary(self) -> dict[str, Any]:
        """JSON-ready: every field, paths as strings."""
        data = asdict(self)
        data["layout"] = str(self.layout)
        data["reference"] = self.reference
        data["size"] = sum(layer.size for layer in self.layers)
        data["requirements_lock"] = self.contents.requirements_lock()
        return data
