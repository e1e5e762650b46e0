"""Ed25519 keys and detached signatures for manifests and inventories (through ``cryptography``).

``airlock signing-key create --out KEY`` writes ``KEY`` (the private key, PKCS#8 PEM, mode 0600) and ``KEY.pub``
(one line: ``airlock-ed25519 <base64 of the 32-byte key> <comment>``). The staging side signs with
the private key; the air-gapped side trusts the public key (``--trust KEY.pub``).

Each kind of document is signed under its own context string, so a signature over an inventory can
never pass for one over a manifest. The signature file is JSON::

    {"algorithm":"ed25519","context":"airlock manifest v1","key_id":"3f2a...","signature":"<base64>"}

Example::

    keys = generate_keypair(Path("airlock.key"))
    sig = sign(load_private_key(keys.private), data, MANIFEST_CONTEXT)
    verify(load_public_key(keys.public), data, sig, MANIFEST_CONTEXT)  # raises SignatureError
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError

from airlock.errors import ConfigError, SignatureError

MANIFEST_CONTEXT: Final = "airlock manifest v1"
INVENTORY_CONTEXT: Final = "airlock inventory v1"
PUBLIC_PREFIX: Final = "airlock-ed25519"


class SignatureFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal["ed25519"] = "ed25519"
    context: str
    key_id: str
    signature: str


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    key_id: str


def key_id(public: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the SHA-256 of the raw public key: short, stable, shown to users."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_line(public: Ed25519PublicKey, comment: str = "") -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{PUBLIC_PREFIX} {base64.b64encode(raw).decode()} {comment}".rstrip() + "\n"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode``; never overwrite a key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def generate_keypair(private_path: Path, *, comment: str = "airlock") -> KeyPair:
    """Write a new key pair at ``private_path`` and ``private_path.pub``; refuse to overwrite either."""
    public_path = private_path.with_name(private_path.name + ".pub")
    for p in (private_path, public_path):
        if p.exists():
            raise ConfigError(f"{p} already exists; keys are never overwritten", hint="choose another --out")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_new(private_path, pem, 0o600)
    _write_new(public_path, public_line(key.public_key(), comment).encode(), 0o644)
    return KeyPair(private=private_path, public=public_path, key_id=key_id(key.public_key()))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the signing key: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key", hint="make one with `airlock signing-key create`")
    return key


def parse_public_key(text: str, *, source: str) -> Ed25519PublicKey:
    """Read ``airlock-ed25519 <base64>`` (or a PEM public key) into a key."""
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped.encode())
        except ValueError as exc:
            raise ConfigError(f"{source}: not a PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{source}: not an Ed25519 public key")
        return key
    fields = stripped.split()
    if len(fields) < 2 or fields[0] != PUBLIC_PREFIX:
        raise ConfigError(f"{source}: not an airlock public key (expected '{PUBLIC_PREFIX} <base64>')")
    try:
        raw = base64.b64decode(fields[1], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{source}: the public key is damaged ({exc})") from exc


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the public key: {exc}") from exc
    return parse_public_key(text, source=str(path))


def _message(data: bytes, context: str) -> bytes:
    return context.encode() + b"\x00" + data


def sign(key: Ed25519PrivateKey, data: bytes, context: str) -> bytes:
    """The signature file's bytes for ``data`` under ``context``."""
    sig = key.sign(_message(data, context))
    doc = SignatureFile(
        context=context, key_id=key_id(key.public_key()), signature=base64.b64encode(sig).decode()
    )
    return doc.model_dump_json().encode() + b"\n"


def verify(
    trusted: list[Ed25519PublicKey], data: bytes, signature: bytes, context: str, *, source: str
) -> str:
    """Check ``signature`` over ``data`` against the trusted keys; return the key id that signed it."""
    try:
        doc = SignatureFile.model_validate_json(signature)
        raw = base64.b64decode(doc.signature, validate=True)
    except (ValidationError, binascii.Error, ValueError) as exc:
        raise SignatureError(f"{source}: the signature file is damaged ({exc.__class__.__name__})") from exc
    if doc.context != context:
        raise SignatureError(f"{source}: signed as {doc.context!r}, not as {context!r}")
    if not trusted:
        raise SignatureError(
            f"{source}: signed by key {doc.key_id}, but no key is trusted", hint="give --trust KEY.pub"
        )
    for key in trusted:
        try:
            key.verify(raw, _message(data, context))
        except InvalidSignature:
            continue
        return key_id(key)
    ids = ", ".join(key_id(k) for k in trusted)
    if any(key_id(k) == doc.key_id for k in trusted):
        raise SignatureError(f"{source}: the signature does not match: the file was changed after signing")
    raise SignatureError(
        f"{source}: signed by key {doc.key_id}, which is not trusted (trusted: {ids}); "
        "or the file was changed after signing"
    )
