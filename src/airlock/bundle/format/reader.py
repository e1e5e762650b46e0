"""Finding a bundle's volumes under the folders given, and trusting its manifest.

Each folder given is a volume (it holds ``volume.json``) or holds volumes (``vol-*/``), so both
``verify /media/usb1 /media/usb2`` and ``verify bundle/`` work. The manifest is checked in this
order before anything else is read: its signature over the exact bytes (with the trusted keys),
then its form (canonical JSON, every path safe), then each volume's index against it. The manifest
trusted is the first copy whose signature verifies; every other volume's copies of the manifest and
signature must be the same bytes, and its index the one the manifest gives it. A volume whose copy
is damaged is still read (its number told by what it holds where its index is damaged), and the
damage is listed in ``OpenBundle.damaged`` for verify and install to report with the volume.

Example::

    opened = VolumeSet([Path("/media/usb")], trust=[Path("site.pub")]).open()
    opened.missing  # [2, 3]: volumes of the set not mounted

:class:`VolumeSet` is what ``verify``, ``install`` and ``rebuild`` share: the folders, the keys,
the threads; each verb's options add what it alone needs.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from airlock.bundle.format import layout
from airlock.bundle.format.manifest import Manifest, VolumeIndex
from airlock.bundle.format.sign import MANIFEST_CONTEXT, SignatureFile, load_public_key, verify
from airlock.common.fileio import DEFAULT_DISK, Disk
from airlock.common.progress import ProgressSink
from airlock.errors import BundleError, BundleFormatError, SignatureError, UnsafePathError

MAX_METADATA = 512 * 1024 * 1024


@dataclass(frozen=True)
class MountedVolume:
    number: int
    root: Path


DamageKind = Literal["corrupt", "unsafe_path"]


@dataclass(frozen=True)
class Damage:
    """A volume's copy of the bundle's metadata that is not what the trusted manifest says."""

    volume: int
    path: str  # inside the volume: manifest.json, manifest.sig or volume.json
    kind: DamageKind
    message: str  # names the volume


@dataclass(frozen=True)
class OpenBundle:
    manifest: Manifest
    manifest_bytes: bytes
    bundle: str  # the SHA-256 of manifest.json: the bundle's id
    signed_by: str | None  # the key id, None when unsigned (and allowed)
    volumes: dict[int, MountedVolume]
    notes: list[str] = field(default_factory=list)
    signature: bytes | None = None  # the signature file that verified (or was read, unchecked)
    damaged: list[Damage] = field(default_factory=list)  # damaged metadata copies, by volume

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
        inner = [
            p
            for p in sorted(d.glob(layout.VOLUME_PREFIX + "*"))
            if (p / layout.VOLUME_INDEX).exists() or (p / layout.MANIFEST).exists()
        ]
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
    signed_by = verify(trusted, data, signature, MANIFEST_CONTEXT, source=str(first / layout.MANIFEST))
    if SignatureFile.model_validate_json(signature).model_dump_json().encode() + b"\n" != signature:
        # it verifies, but its bytes are not the ones pack wrote (sign's form): a damaged copy
        raise SignatureError(f"{sig_path}: the signature file is damaged (not in the form pack writes)")
    return Trust(signed_by, notes)


@dataclass(frozen=True)
class _Copy:
    """One volume's copies of the bundle's metadata, as read (or why they could not be)."""

    root: Path
    manifest: bytes | BundleError
    signature: bytes | BundleError | None  # None: the volume holds none

    @classmethod
    def read(cls, root: Path) -> _Copy:
        return cls(root, _read_or_why(root / layout.MANIFEST, "manifest"), _signature(root))


def _read_or_why(path: Path, what: str) -> bytes | BundleError:
    try:
        return read_small(path, what=what)
    except BundleError as exc:
        return exc


def _signature(root: Path) -> bytes | BundleError | None:
    path = root / layout.SIGNATURE
    if not path.exists() and not path.is_symlink():
        return None
    return _read_or_why(path, "signature")


class _Chosen(NamedTuple):
    copy: _Copy
    data: bytes
    trust: Trust


def _choose(copies: list[_Copy], trusted: list[Ed25519PublicKey], *, allow_unsigned: bool) -> _Chosen:
    """The first copy whose signature verifies (then, with --allow-unsigned, the first that reads).

    A copy damaged on one volume does not stop the bundle from being read: the intact copies prove
    what was signed, and each damaged copy is reported with its volume. When no copy verifies, the
    first copy's reason is raised.
    """
    first_error: BundleError | None = None
    passes = [False, True] if allow_unsigned else [False]
    for lenient in passes:
        # with --allow-unsigned too, a copy with a signature is preferred: its bytes are the reference
        order = sorted(copies, key=lambda c: c.signature is None) if lenient else copies
        for c in order:
            if isinstance(c.manifest, BundleError):
                first_error = first_error or c.manifest
                continue
            try:
                trust = load_trusted(c.root, c.manifest, trusted, allow_unsigned=lenient)
            except BundleError as exc:
                first_error = first_error or exc
                continue
            return _Chosen(c, c.manifest, trust)
    assert first_error is not None  # there is at least one volume root
    raise first_error


def _damage_of(copy: _Copy, chosen: _Chosen, number: int, where: str) -> list[Damage]:
    """How ``copy``'s manifest and signature differ from the copies that were trusted (on ``where``)."""
    found: list[Damage] = []
    for name, got, want in (
        (layout.MANIFEST, copy.manifest, chosen.data),
        (layout.SIGNATURE, copy.signature, chosen.copy.signature),
    ):
        if got == want:
            continue
        if isinstance(got, BundleError):
            kind: DamageKind = "unsafe_path" if isinstance(got, UnsafePathError) else "corrupt"
            found.append(Damage(number, name, kind, f"volume {number}: {name} cannot be read: {got.message}"))
        elif got is None:
            found.append(Damage(number, name, "corrupt", f"volume {number}: {name} is missing"))
        elif want is None or isinstance(want, BundleError):
            found.append(
                Damage(number, name, "corrupt", f"volume {number}: {name} is here, but not on {where}")
            )
        else:
            what = "copy trusted" if chosen.trust.signed_by is None else "signed copy"
            what = what if name == layout.MANIFEST else "signature"
            found.append(
                Damage(
                    number,
                    name,
                    "corrupt",
                    f"volume {number}: {name} is damaged: it differs from the {what} ({where})",
                )
            )
    return found


def _index(root: Path, copy: _Copy, manifest: Manifest, bundle: str) -> tuple[VolumeIndex | None, str | None]:
    """The volume's index if it is the one the signed manifest gives it; else None and what is wrong.

    Raises when the volume is one of another bundle (its index names its own manifest's digest).
    """
    path = root / layout.VOLUME_INDEX
    if not path.exists() and not path.is_symlink():
        return None, "is missing"
    try:
        index = VolumeIndex.from_bytes(read_small(path, what="volume index"), source=layout.VOLUME_INDEX)
    except BundleError as exc:
        return None, exc.message.removeprefix(f"{layout.VOLUME_INDEX}: ")
    if index.bundle != bundle:
        own = copy.manifest
        if isinstance(own, bytes) and own != b"" and hashlib.sha256(own).hexdigest() == index.bundle:
            raise BundleFormatError(
                f"{root}: this volume belongs to another bundle ({index.bundle[:12]}, not {bundle[:12]})",
                hint="give only the volumes of one bundle",
            )
        return None, "it names another bundle"
    if not 1 <= index.number <= len(manifest.volumes):
        return None, f"volume number {index.number} is not in the set"
    if index != VolumeIndex.of(manifest, bundle, manifest.volumes[index.number - 1]):
        return None, f"it does not match the signed manifest's entry for volume {index.number}"
    return index, None


def _which_volume(root: Path, manifest: Manifest) -> int | None:
    """The volume whose entries ``root`` holds (most of them), for a volume whose index is damaged;
    the folder's name (``vol-0002``) settles a tie."""
    held = {
        p.relative_to(root).as_posix()
        for sub in (layout.BLOBS_DIR, layout.PARITY_DIR)
        if (root / sub).is_dir() and not (root / sub).is_symlink()
        for p in (root / sub).iterdir()
    }
    scores = {v.number: len(held & {e.path for e in v.entries}) for v in manifest.volumes}
    best = max(scores.values(), default=0)
    tied = [n for n, s in scores.items() if s == best] if best else []
    named = re.fullmatch(re.escape(layout.VOLUME_PREFIX) + r"(\d{4})", root.name)
    by_name = int(named.group(1)) if named else None
    if len(tied) == 1:
        return tied[0]
    if by_name is not None and (by_name in tied or (not tied and 1 <= by_name <= len(manifest.volumes))):
        return by_name
    return None


def open_bundle(
    dirs: list[Path], trusted: list[Ed25519PublicKey], *, allow_unsigned: bool = False
) -> OpenBundle:
    """Trust the manifest (a copy whose signature verifies), then identify and check every volume.

    A volume's damaged metadata (a manifest or signature copy, its index) is listed in
    ``OpenBundle.damaged`` with the volume's number; verify and install report it.
    """
    roots = find_volume_roots(dirs)
    copies = [_Copy.read(root) for root in roots]
    chosen = _choose(copies, trusted, allow_unsigned=allow_unsigned)
    data = chosen.data
    manifest = Manifest.from_bytes(data, source=str(chosen.copy.root / layout.MANIFEST))
    bundle = hashlib.sha256(data).hexdigest()
    notes = list(chosen.trust.notes)
    volumes: dict[int, MountedVolume] = {}
    damaged: list[Damage] = []
    identified: list[tuple[_Copy, int]] = []
    for copy in copies:
        root = copy.root
        index, wrong = _index(root, copy, manifest, bundle)
        number = index.number if index is not None else _which_volume(root, manifest)
        if number is None:
            raise BundleFormatError(
                f"{root / layout.VOLUME_INDEX}: this volume's index {wrong}, and what the volume holds "
                "matches no volume of the set",
                hint="rebuild this volume from parity (airlock rebuild), or copy it again from the staging side",
            )
        if number in volumes:
            notes.append(
                f"volume {number} is given twice ({volumes[number].root} and {root}); using the first"
            )
            continue
        if wrong is not None:
            damaged.append(
                Damage(
                    number,
                    layout.VOLUME_INDEX,
                    "corrupt",
                    f"volume {number}'s index ({layout.VOLUME_INDEX}) is damaged: {wrong}",
                )
            )
        volumes[number] = MountedVolume(number, root)
        identified.append((copy, number))
    trusted_on = next((f"volume {n}" for c, n in identified if c is chosen.copy), str(chosen.copy.root))
    for copy, number in identified:
        damaged += _damage_of(copy, chosen, number, trusted_on)
    signature = chosen.copy.signature if isinstance(chosen.copy.signature, bytes) else None
    return OpenBundle(manifest, data, bundle, chosen.trust.signed_by, volumes, notes, signature, damaged)
