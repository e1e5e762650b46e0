"""``.airlock/store.json``: what the store holds, with hashes; rewritten atomically after each install.

Example::

    db = StoreDb.load(Path("/srv/store/.airlock/store.json"))
    [(m.repo, m.commit[:12]) for m in db.models]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from airlock.common.types import FrozenModel, RelPath, Sha256, Size
from airlock.errors import StoreError


class StoredFile(FrozenModel):
    path: RelPath
    size: Size
    sha256: Sha256


class StoredModel(FrozenModel):
    name: str  # the model's name in the spec it was packed from
    repo: str  # its id in the store, e.g. "HuggingFaceTB/SmolLM2-135M-Instruct" or "local/tiny"
    revision: str  # as packed ("main", a tag or a commit)
    commit: str
    source: str  # hf | local | gguf
    license: str | None = None
    files: list[StoredFile]
    bundle: str
    installed: str


class StoredWheel(FrozenModel):
    file: RelPath
    size: Size
    sha256: Sha256
    bundle: str


class StoredPlainFile(FrozenModel):
    path: RelPath
    size: Size
    sha256: Sha256
    bundle: str


class ImageTarget(FrozenModel):
    """Where install put an image on this side, under which reference (serve and deploy use it)."""

    kind: Literal["registry", "docker", "oci"]
    reference: str  # registry: HOST/REPO@sha256:...; docker: the tag it was loaded as; oci: DIR:NAME
    at: str  # when


class StoredImage(FrozenModel):
    reference: str  # as the spec named it upstream, e.g. vllm/vllm-openai:v0.11.0
    repository: str  # docker.io/vllm/vllm-openai
    tag: str | None = None
    digest: str  # the image manifest's digest, as upstream
    index_digest: str | None = None
    media_type: str
    platform: str
    size: Size
    cuda_version: str | None = None
    nvidia_require_cuda: str | None = None
    vllm_version: str | None = None
    files: list[StoredFile]  # its blobs, under images/blobs/sha256/
    bundle: str
    installed: str
    targets: list[ImageTarget] = Field(default_factory=list)

    @property
    def ref_name(self) -> str:
        """Its name in the store's OCI layout."""
        return f"{self.repository}:{self.tag}" if self.tag else f"{self.repository}@{self.digest}"


class StoredBundle(FrozenModel):
    id: Sha256
    created: str
    installed: str
    signed_by: str | None
    airlock_version: str


class StoreDb(FrozenModel):
    format: Literal["airlock-store/1"] = "airlock-store/1"
    bundles: list[StoredBundle] = Field(default_factory=list)
    models: list[StoredModel] = Field(default_factory=list)
    wheels: list[StoredWheel] = Field(default_factory=list)
    files: list[StoredPlainFile] = Field(default_factory=list)
    images: list[StoredImage] = Field(default_factory=list)

    def image_location(self, reference: str) -> str | None:
        """Where an engine's ``image`` (as a spec names it) was installed on this side: the internal
        registry's reference by digest, else the docker tag; None if the store has no such image."""
        for image in self.images:
            names = (image.reference, f"{image.repository}:{image.tag}", f"{image.repository}@{image.digest}")
            if reference in names:
                by_kind = {t.kind: t.reference for t in image.targets}
                return by_kind.get("registry") or by_kind.get("docker")
        return None

    @classmethod
    def load(cls, path: Path) -> StoreDb:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise StoreError(f"{path}: cannot read the store's index: {exc.strerror}") from exc
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise StoreError(f"{path}: the store's index is damaged: {exc}") from exc

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=1).encode() + b"\n"
