"""The image's Debian root: ``mmdebstrap`` from Debian's packages (no base image to pull), cached.

The tarball is cached under ``<cache>/debian/`` keyed by what decides its contents (suite, mirrors,
packages, architecture), so a rebuild of the image reuses it; ``refresh`` builds it again (to take
Debian's security updates). mmdebstrap honours SOURCE_DATE_EPOCH: the same packages give the same
tarball. Its record (``.json`` beside it) holds the epoch and the tarball's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from airlock.common.fileio import write_atomic
from airlock.errors import ImageBuildError
from airlock.image_build.steps import need, run

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class DebianRoot:
    tarball: Path
    sha256: str
    epoch: int
    suite: str
    cached: bool  # reused rather than built now


def debian_arch() -> str:
    machine = platform.machine()
    if machine not in ARCH:
        raise ImageBuildError(f"no Debian architecture for this machine ({machine})")
    return ARCH[machine]


def cache_key(suite: str, mirrors: tuple[str, ...], packages: tuple[str, ...], arch: str) -> str:
    """What names a cached root: a hash of everything that decides its contents."""
    what = {"suite": suite, "mirrors": list(mirrors), "packages": sorted(set(packages)), "arch": arch}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def debian_root(
    cache: Path,
    *,
    suite: str,
    mirrors: tuple[str, ...],
    packages: tuple[str, ...],
    epoch: int,
    refresh: bool = False,
) -> DebianRoot:
    """The cached root for these packages, built with mmdebstrap when missing (or ``refresh``)."""
    arch = debian_arch()
    key = cache_key(suite, mirrors, packages, arch)
    folder = cache / "debian"
    tarball = folder / f"{suite}-{arch}-{key}.tar"
    record = tarball.with_suffix(".json")
    if not refresh and tarball.is_file() and record.is_file():
        try:
            meta = json.loads(record.read_text())
            if meta["size"] == tarball.stat().st_size:
                return DebianRoot(tarball, str(meta["sha256"]), int(meta["epoch"]), suite, cached=True)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged record: build again
    need("mmdebstrap", "mmdebstrap")
    folder.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(f".{tarball.name}.{os.getpid()}.partial")
    try:
        run(
            [
                "mmdebstrap", "--variant=apt", "--mode=root", f"--architectures={arch}",
                f"--include={','.join(sorted(set(packages)))}",
                "--format=tar", suite, str(partial),
                *(line.format(suite=suite) for line in mirrors),
            ],
            step=f"mmdebstrap (Debian {suite} with {', '.join(packages)})",
            env={"SOURCE_DATE_EPOCH": str(epoch)},
        )  # fmt: skip
        sha = _sha256(partial)
        os.replace(partial, tarball)
    finally:
        partial.unlink(missing_ok=True)
    meta = {"sha256": sha, "size": tarball.stat().st_size, "epoch": epoch, "suite": suite,
            "packages": sorted(set(packages)), "mirrors": list(mirrors), "arch": arch}  # fmt: skip
    write_atomic(record, json.dumps(meta, indent=2).encode())
    return DebianRoot(tarball, sha, epoch, suite, cached=False)
