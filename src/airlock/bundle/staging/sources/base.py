"""What every source yields: artifacts whose files are known by logical path and local origin."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from airlock.bundle.format.manifest import ImageInfo, Source
from airlock.common.types import check_relative_path
from airlock.errors import UnsafePathError


@dataclass(frozen=True)
class SourceFile:
    path: str  # logical path inside the artifact, e.g. "model.safetensors" or "onnx/model.onnx"
    origin: Path  # where pack reads it (pack stats and hashes it: see hashing.Stamp)
    expected_sha256: str | None = None  # known in advance (Hugging Face LFS): checked when hashed
    compressed: bool = False  # compressed already (an image's gzip or zstd layer): pack does not recompress


@dataclass(frozen=True)
class Collected:
    kind: Literal["model", "wheels", "files", "image"]
    name: str
    source: Source
    files: tuple[SourceFile, ...]
    repo: str | None = None  # models: the repo id they take in the store
    license: str | None = None
    image: ImageInfo | None = None  # images: what the image is (its files are its OCI blobs)


def safe_logical(path: str, *, where: str) -> str:
    """Check a logical path as the manifest will, so pack fails early and names the source."""
    try:
        return check_relative_path(path)
    except ValueError as exc:  # PydanticCustomError is a ValueError
        raise UnsafePathError(f"{where}: {exc}") from exc


def content_commit(files: Iterable[tuple[str, str]]) -> str:
    """A 40-hex 'commit' for a local source: a digest of its (path, sha256) pairs, so equal content
    gets an equal snapshot in the store and changed content a new one."""
    h = hashlib.sha256()
    for path, sha in sorted(files):
        h.update(f"{path}\0{sha}\n".encode())
    return h.hexdigest()[:40]


def readme_license(folder: Path) -> str | None:
    """The ``license:`` of a model card's YAML front matter (README.md), as the Hub shows it."""
    from huggingface_hub.repocard import metadata_load

    readme = folder / "README.md"
    if not readme.is_file():
        return None
    try:
        meta = metadata_load(readme) or {}
    except (ValueError, OSError, UnicodeDecodeError):
        return None
    value = meta.get("license")
    return value if isinstance(value, str) else None
