"""The OCI image layout, assembled with umoci (Debian's ``umoci``): a blank image, layers added verbatim
(``umoci raw add-layer`` gzips the tar as given, so its diff ID is the tar's own SHA-256), the config
(entrypoint, environment, port, volume, user, labels), then ``umoci gc`` so that only the tagged
image's blobs stay. Every ``created`` date is SOURCE_DATE_EPOCH, so the same layers give the same
manifest digest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlock.errors import ImageBuildError
from airlock.image_build.layers import TarDigest
from airlock.image_build.steps import need, run


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    port: int
    volume: str
    workdir: str
    user: str
    labels: dict[str, str]
    created: str  # RFC 3339
    author: str = "airlock image build"


def _umoci(*args: str, step: str) -> str:
    return run(["umoci", *args], step=f"umoci {step}")


def new_layout(layout: Path, tag: str, *, created: str) -> None:
    need("umoci", "umoci")
    if layout.exists():
        raise ImageBuildError(f"{layout} already exists", hint="give a new --out folder, or remove this one")
    _umoci("init", "--layout", str(layout), step="init")
    _umoci("new", "--image", f"{layout}:{tag}", step="new")
    # umoci new dates the blank config now; date it like everything else
    _umoci(
        "config", "--image", f"{layout}:{tag}", "--created", created, "--no-history", step="config --created"
    )


def add_layer(layout: Path, tag: str, layer: TarDigest, *, name: str, created: str) -> None:
    _umoci(
        "raw", "add-layer", "--image", f"{layout}:{tag}",
        "--history.created", created, "--history.created_by", f"airlock image build: {name}",
        "--history.comment", f"diff {layer.sha256[:12]}", str(layer.path),
        step=f"raw add-layer ({name})",
    )  # fmt: skip


def configure(layout: Path, tag: str, config: ImageConfig) -> None:
    args = ["config", "--image", f"{layout}:{tag}", "--no-history", "--created", config.created,
            "--author", config.author, "--os", "linux", "--config.workingdir", config.workdir,
            "--config.user", config.user, "--config.exposedports", f"{config.port}/tcp",
            "--config.volume", config.volume, "--clear=config.entrypoint", "--clear=config.cmd"]  # fmt: skip
    for word in config.entrypoint:
        args += ["--config.entrypoint", word]
    for word in config.cmd:
        args += ["--config.cmd", word]
    for pair in config.env:
        args += ["--config.env", pair]
    for key, value in config.labels.items():
        args += ["--config.label", f"{key}={value}"]
    _umoci(*args, step="config")
    _umoci("gc", "--layout", str(layout), step="gc")


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    algorithm, _, hexdigest = digest.partition(":")
    data: dict[str, Any] = json.loads((layout / "blobs" / algorithm / hexdigest).read_text())
    return data


def read_image(layout: Path, tag: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The tag's manifest digest, its manifest and its config, from the layout's index."""
    index = json.loads((layout / "index.json").read_text())
    for entry in index.get("manifests", []):
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            manifest = _blob(layout, entry["digest"])
            return str(entry["digest"]), manifest, _blob(layout, manifest["config"]["digest"])
    raise ImageBuildError(f"{layout} has no image tagged {tag!r}")
