"""The on-disk format of a transfer bundle and of the model store, as named constants.

A bundle is a set of *volumes*, one per medium (a USB stick, a disc, a disk). ``airlock pack --out DIR``
writes each volume as a folder under DIR; copy a volume folder (or its contents) to its medium::

    DIR/
    ├── vol-0001/                          one medium
    │   ├── manifest.json                  canonical JSON, the same bytes on every volume (MANIFEST)
    │   ├── manifest.sig                   Ed25519 signature of manifest.json (SIGNATURE)
    │   ├── volume.json                    this volume: its number in the set and the index of what it
    │   │                                  holds, with hashes; equal to the manifest's entry (VOLUME_INDEX)
    │   ├── sbom.cdx.json                  CycloneDX SBOM; its sha256 is in the manifest (SBOM)
    │   ├── bootstrap/                     first volume, ``pack --with-airlock``: airlock's wheels and
    │   │                                  their dependencies, requirements.txt (pinned by hash),
    │   │                                  bootstrap.sh and SHA256SUMS; listed in the manifest
    │   └── blobs/sha256/
    │       ├── <sha256>                   a whole blob, raw bytes: its name is its hash
    │       ├── <sha256>.zst               a whole blob stored as zstd frames (see compress.py)
    │       └── <sha256>.p0002             a part of a blob larger than a volume (``.zst.p0002`` compressed)
    ├── vol-0002/ ...
    └── vol-0003/                          a parity volume (``--parity``): manifest, signature, index and
        └── parity/share-01.rs             one Reed-Solomon share over the data volumes (zfec)
    .DIR.airlock-pack/                     pack's own state (journal, hash cache, downloads, temp files),
                                           beside DIR, not in it: copying DIR to media never carries it

Every path inside a volume matches :data:`ENTRY_PATH_RE`, so a manifest cannot name a file outside
its volume. Blobs are content-addressed by SHA-256, which leaves room for OCI image layers (their
digests are SHA-256 too): they go in the same ``blobs/sha256/`` folders, on the same volumes, under
the same signature.

The model store's layout is :mod:`airlock.store.layout`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

FORMAT: Final = "airlock-bundle/1"
INVENTORY_FORMAT: Final = "airlock-inventory/1"
VOLUME_FORMAT: Final = "airlock-volume/1"

# -- a volume -------------------------------------------------------------------------------------
MANIFEST: Final = "manifest.json"
SIGNATURE: Final = "manifest.sig"
VOLUME_INDEX: Final = "volume.json"
SBOM: Final = "sbom.cdx.json"
BLOBS_DIR: Final = "blobs/sha256"
PARITY_DIR: Final = "parity"
METADATA_FILES: Final = (MANIFEST, SIGNATURE, VOLUME_INDEX, SBOM)
BOOTSTRAP_DIR: Final = "bootstrap"  # on the first volume only
BOOTSTRAP_SUMS: Final = "SHA256SUMS"
BOOTSTRAP_SCRIPT: Final = "bootstrap.sh"
BOOTSTRAP_REQUIREMENTS: Final = "requirements.txt"
VOLUME_PREFIX: Final = "vol-"
ZSTD_SUFFIX: Final = ".zst"

#: Every file a manifest places on a volume; nothing else may be written or read there.
ENTRY_PATH_RE: Final = re.compile(
    r"^(blobs/sha256/[0-9a-f]{64}(\.zst)?(\.p[0-9]{4})?|parity/share-[0-9]{2}\.rs)$"
)

# -- pack's working state, beside --out (pack_state_dir) -------------------------------------------
PACK_STATE_DIR: Final = ".airlock-pack"  # the suffix of its name; inside --out before airlock 0.2
PACK_JOURNAL: Final = "journal.jsonl"
PACK_HASH_CACHE: Final = "hashes.json"
PACK_TMP: Final = "tmp"
PACK_DOWNLOADS: Final = "downloads"


def pack_state_dir(out: Path) -> Path:
    """Where pack keeps its working state for ``out``: ``.NAME.airlock-pack`` beside it (``bundle`` ->
    ``.bundle.airlock-pack``), so that copying the bundle's folder does not carry it."""
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}{PACK_STATE_DIR}"


def volume_name(number: int) -> str:
    """``vol-0001`` for volume 1."""
    return f"{VOLUME_PREFIX}{number:04d}"


def blob_path(sha256: str, *, compressed: bool = False, part: int | None = None) -> str:
    """The path of a blob (or a part of it) inside a volume, e.g. ``blobs/sha256/ab12...``."""
    suffix = ZSTD_SUFFIX if compressed else ""
    if part is not None:
        suffix += f".p{part:04d}"
    return f"{BLOBS_DIR}/{sha256}{suffix}"


def parity_path(share: int) -> str:
    return f"{PARITY_DIR}/share-{share:02d}.rs"
