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
