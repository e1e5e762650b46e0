"""``airlock inventory``: what the store on the air-gapped side holds, signed, for delta packs.

The inventory lists every blob (SHA-256 and size) the store's index names and that is still there,
plus each model's repo and commit. Carried back to staging, ``airlock pack --base inventory.json``
leaves out exactly what the store already holds, across models, wheels and files, with no old
bundle kept around. It is signed (``inventory.json.sig``) by the air-gapped side's key, under its
own context string, so it cannot pass for a manifest.

Example::

    inv = make_inventory(Store(Path("/srv/store")))
    write_inventory(inv, Path("inventory.json"), key=load_private_key(Path("site.key")))
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field

from airlock import __version__
from airlock.bundle.format import layout
from airlock.bundle.format.manifest import canonical_json, parse_canonical, utc_now
from airlock.bundle.format.sign import INVENTORY_CONTEXT, sign
from airlock.common.fileio import write_atomic
from airlock.common.types import FrozenModel, Sha256, Size
from airlock.store.store import Store

SIG_SUFFIX = ".sig"


class InventoryBlob(FrozenModel):
    sha256: Sha256
    size: Size


class InventoryModel(FrozenModel):
    repo: str
    revision: str
    commit: str


class Inventory(FrozenModel):
    format: Literal["airlock-inventory/1"] = layout.INVENTORY_FORMAT
    created: str
    airlock_version: str
    store: str
    blobs: list[InventoryBlob] = Field(default_factory=list)
    models: list[InventoryModel] = Field(default_factory=list)

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "inventory.json") -> Inventory:
        return parse_canonical(cls, data, source=source)


def make_inventory(store: Store) -> Inventory:
    """What ``store`` holds; StoreError if there is no store there (a typo must not read as empty)."""
    store.require()
    db = store.load_db()
    index = store.blob_index(db)
    blobs = [
        InventoryBlob(sha256=sha, size=where.size)
        for sha, where in sorted(index.items())
        if store.find_blob(sha, index) is not None
    ]
    models = sorted({(m.repo, m.revision, m.commit) for m in db.models})
    return Inventory(
        created=utc_now(),
        airlock_version=__version__,
        store=str(store.root),
        blobs=blobs,
        models=[InventoryModel(repo=r, revision=v, commit=c) for r, v, c in models],
    )


def write_inventory(inventory: Inventory, out: Path, *, key: Ed25519PrivateKey | None) -> Path | None:
    """Write ``out`` (and ``out.sig`` when a key is given); return the signature's path."""
    data = inventory.to_bytes()
    write_atomic(out, data)
    if key is None:
        return None
    sig = out.with_name(out.name + SIG_SUFFIX)
    write_atomic(sig, sign(key, data, INVENTORY_CONTEXT))
    return sig
