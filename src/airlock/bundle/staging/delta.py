"""``pack --base``: what the other side already holds, from an earlier manifest or a store inventory.

A base only decides what *not* to carry; the bundle still lists every file with its hash, and
install refuses to finish unless the store holds every blob left out. So a wrong base fails safe.
Still, with ``--trust`` the base's signature is checked (a manifest's ``manifest.sig`` beside it,
an inventory's ``inventory.json.sig``), and a base that fails is refused.

Example::

    base = load_base(Path("inventory.json"), [Path("site.pub")])
    len(base.blobs)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from airlock.bundle.format import layout
from airlock.bundle.format.inventory import SIG_SUFFIX, Inventory
from airlock.bundle.format.manifest import Manifest, load_json_strict
from airlock.bundle.format.reader import read_small
from airlock.bundle.format.sign import INVENTORY_CONTEXT, MANIFEST_CONTEXT, load_public_key, verify
from airlock.errors import BundleFormatError, SignatureError


@dataclass(frozen=True)
class Base:
    kind: Literal["manifest", "inventory"]
    sha256: str
    blobs: frozenset[str]
    signed_by: str | None = None
    notes: list[str] = field(default_factory=list)


def load_base(path: Path, trust: list[Path]) -> Base:
    data = read_small(path, what="base")
    raw = load_json_strict(data, source=str(path))
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if fmt == layout.FORMAT:
        kind: Literal["manifest", "inventory"] = "manifest"
        sig_path, context = path.parent / layout.SIGNATURE, MANIFEST_CONTEXT
    elif fmt == layout.INVENTORY_FORMAT:
        kind = "inventory"
        sig_path, context = path.with_name(path.name + SIG_SUFFIX), INVENTORY_CONTEXT
    else:
        raise BundleFormatError(f"{path}: neither a bundle manifest nor a store inventory (format {fmt!r})")
    signed_by = None
    notes = []
    if trust:
        if not sig_path.is_file():
            raise SignatureError(
                f"{path}: --trust was given but the base is not signed ({sig_path} is missing)"
            )
        keys = [load_public_key(p) for p in trust]
        signed_by = verify(keys, data, read_small(sig_path, what="signature"), context, source=str(path))
    else:
        notes.append(f"the base {path} was not checked against a key (--trust)")
    if kind == "manifest":
        manifest = Manifest.from_bytes(data, source=str(path))
        blobs = frozenset(b.sha256 for b in manifest.blobs)
    else:
        inventory = Inventory.from_bytes(data, source=str(path))
        blobs = frozenset(b.sha256 for b in inventory.blobs)
    return Base(kind, hashlib.sha256(data).hexdigest(), blobs, signed_by, notes)
