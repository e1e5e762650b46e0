"""Finding a bundle's volumes under the folders given, and trusting its manifest.

Each folder given is a volume (it holds ``volume.json``) or holds volumes (``vol-*/``), so both
``verify /media/usb1 /media/usb2`` and ``verify bundle/`` work. The manifest is checked in this
order before anything else is read: its signature over the exact bytes (with the trusted keys),
then its form (canonical JSON, every path safe), then each volume's index against it. Every copy of
the manifest must be the same bytes.

Example::

    opened = VolumeSet([Path("/media/usb")], trust=[Path("site.pub")]).open()
    opened.missing  # [2, 3]: volumes of the set not mounted

:class:`VolumeSet` is what ``verify``, ``install`` and ``rebuild`` share: the folders, the keys,
the threads; each verb's options add what it alone needs.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from airlock.bundle.format import layout
from airlock.bundle.format.manifest import Manifest, VolumeIndex
from airlock.bundle.format.sign import MANIFEST_CONTEXT, load_public_key, verify
from airlock.common.fileio import DEFAULT_DISK, Disk
from airlock.common.progress import ProgressSink
from airlock.errors import BundleFormatError, IntegrityError, SignatureError, UnsafePathError

MAX_METADATA = 512 * 1024 * 1024


@dataclass(frozen=True)
class MountedVolume:
    number: int
    root: Path


@dataclass(frozen=True)
class OpenBundle:
    manifest: Manifest
    manifest_bytes: bytes
    bundle: str  # the SHA-256 of manifest.json: the bundle's id
    signed_by: str | None  # the key id, None when unsigned (and allowed)
    volumes: dict[int, MountedVolume]
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[int]:
        return [v.number for v in self.manifest.volumes if v.number not in self.volumes]


@dataclass(frozen=True)
class VolumeSet:
    """The volumes a verb reads, the keys that may have signed them, and how to go about it."""

    dirs: list[Path]  # each a volume, or a folder of vol-*/ volumes
    trust: list[Path] = field(default_factory=list)  # public key files
    allow_unsigned: bool = False
    workers: int = 2  # threads hashing and copying
    disk: Disk = DEFAULT_DISK  # where install and rebuild write (verify writes nothing)
    progress: ProgressSink | None = None

    def open(self) -> OpenBundle:
        """Find the volumes and trust the manifest (:func:`open_bundle`) with the keys named."""
        trusted = [load_public_key(p) for p in self.trust]
        return open_bundle(self.dirs, trusted, allow_unsigned=self.allow_unsigned)


def read_small(path: Path, *, what: str) -> bytes:
    """Read a metadata file, refusing links (they could point anywhere) and absurd sizes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePathError(
                f"{path}: the {what} is a symbolic link; a volume holds only plain files"
            ) from exc
        raise BundleFormatError(f"{path}: cannot read the {what}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise BundleFormatError(f"{path}: the {what} is not a regular file")
        if st.st_size > MAX_METADATA:
            raise BundleFormatError(f"{path}: the {what} is {st.st_size} bytes, too large to be one")
        return fh.read()


def find_volume_roots(dirs: list[Path]) -> list[Path]:
    roots: list[Path] = []
    for d in dirs:
        if not d.is_dir():
            raise BundleFormatError(f"{d}: no such folder")
        if (d / layout.VOLUME_INDEX).exists() or (d / layout.MANIFEST).exists():
            roots.append(d)
            continue
        inner = [p for p in sorted(d.glob(layout.VOLUME_PREFIX + "*")) if (p / layout.VOLUME_INDEX).exists()]
        if not inner:
            raise BundleFormatError(
                f"{d}: not a bundle volume (no {layout.VOLUME_INDEX}) and holds no {layout.VOLUME_PREFIX}* volumes",
                hint="give the folder where a volume is mounted, or the folder pack wrote",
            )
        roots.extend(inner)
    return roots


class Trust(NamedTuple):
    signed_by: str | None  # the key id that signed the manifest, None where it was not checked
    notes: list[str]  # why not, for the user


def load_trusted(first: Path, data: bytes, trusted: list[Ed25519PublicKey], *, allow_unsigned: bool) -> Trust:
    """Check the manifest's signature against the trusted keys (or note why it is not checked)."""
    notes = []
    sig_path = first / layout.SIGNATURE
    if not sig_path.exists() and not sig_path.is_symlink():
        if not allow_unsigned:
            raise SignatureError(
                f"{first}: the bundle is not signed ({layout.SIGNATURE} is missing)",
                hint="ask for a signed bundle, or pass --allow-unsigned to check its hashes only",
            )
        notes.append("the bundle is not signed: its hashes prove it is intact, not who made it")
        return Trust(None, notes)
    signature = read_small(sig_path, what="signature")
    if not trusted and allow_unsigned:
        notes.append("the bundle is signed but no key is trusted (--trust): the signature was not checked")
        return Trust(None, notes)
    return Trust(
        verify(trusted, data, signature, MANIFEST_CONTEXT, source=str(first / layout.MANIFEST)), notes
    )


def open_bundle(
    dirs: list[Path], trusted: list[Ed25519PublicKey], *, allow_unsigned: bool = False
) -> OpenBundle:
    roots = find_volume_roots(dirs)
    first = roots[0]
    data = read_small(first / layout.MANIFEST, what="manifest")
    signed_by, notes = load_trusted(first, data, trusted, allow_unsigned=allow_unsigned)
    manifest = Manifest.from_bytes(data, source=str(first / layout.MANIFEST))
    bundle = hashlib.sha256(data).hexdigest()
    volumes: dict[int, MountedVolume] = {}
    for root in roots:
        index = VolumeIndex.from_bytes(
            read_small(root / layout.VOLUME_INDEX, what="volume index"),
            source=str(root / layout.VOLUME_INDEX),
        )
        if index.bundle != bundle:
            raise BundleFormatError(
                f"{root}: this volume belongs to another bundle ({index.bundle[:12]}, not {bundle[:12]})",
                hint="give only the volumes of one bundle",
            )
        if root != first and read_small(root / layout.MANIFEST, what="manifest") != data:
            raise SignatureError(
                f"{root / layout.MANIFEST}: differs from {first / layout.MANIFEST}: it was changed"
            )
        if not 1 <= index.number <= len(manifest.volumes):
            raise BundleFormatError(f"{root}: volume number {index.number} is not in the set")
        expected = VolumeIndex.of(manifest, bundle, manifest.volumes[index.number - 1])
        if index != expected:
            raise IntegrityError(
                f"{root / layout.VOLUME_INDEX}: does not match the signed manifest's entry for volume {index.number}"
            )
        if index.number in volumes:
            notes.append(
                f"volume {index.number} is given twice ({volumes[index.number].root} and {root}); using the first"
            )
            continue
        volumes[index.number] = MountedVolume(index.number, root)
    return OpenBundle(manifest, data, bundle, signed_by, volumes, notes)
