"""Ed25519 keys and signatures: the right key passes; a wrong key, a changed byte or a damaged file fail."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from airlock.bundle.format.sign import (
    INVENTORY_CONTEXT,
    MANIFEST_CONTEXT,
    KeyPair,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    sign,
    verify,
)
from airlock.errors import ConfigError, SignatureError

DATA = b'{"format":"airlock-bundle/1"}'


def test_keygen_writes_a_private_key_only_its_owner_reads(keys: KeyPair) -> None:
    assert stat.S_IMODE(keys.private.stat().st_mode) == 0o600
    assert keys.public.read_text().startswith("airlock-ed25519 ")
    assert (
        key_id(load_public_key(keys.public))
        == keys.key_id
        == key_id(load_private_key(keys.private).public_key())
    )


def test_keygen_never_overwrites(keys: KeyPair) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        generate_keypair(keys.private)


def test_the_signing_key_verifies(keys: KeyPair) -> None:
    sig = sign(load_private_key(keys.private), DATA, MANIFEST_CONTEXT)
    assert verify([load_public_key(keys.public)], DATA, sig, MANIFEST_CONTEXT, source="m") == keys.key_id


def test_a_wrong_key_is_refused_and_named(keys: KeyPair, other_keys: KeyPair) -> None:
    sig = sign(load_private_key(keys.private), DATA, MANIFEST_CONTEXT)
    with pytest.raises(SignatureError, match=f"signed by key {keys.key_id}, which is not trusted"):
        verify([load_public_key(other_keys.public)], DATA, sig, MANIFEST_CONTEXT, source="m")


def test_a_changed_byte_is_refused(keys: KeyPair) -> None:
    sig = sign(load_private_key(keys.private), DATA, MANIFEST_CONTEXT)
    with pytest.raises(SignatureError, match="changed after signing"):
        verify([load_public_key(keys.public)], DATA.replace(b"1", b"2"), sig, MANIFEST_CONTEXT, source="m")


def test_an_inventory_signature_cannot_pass_for_a_manifest(keys: KeyPair) -> None:
    sig = sign(load_private_key(keys.private), DATA, INVENTORY_CONTEXT)
    with pytest.raises(SignatureError, match="signed as"):
        verify([load_public_key(keys.public)], DATA, sig, MANIFEST_CONTEXT, source="m")
    doc = json.loads(sig)
    doc["context"] = MANIFEST_CONTEXT  # relabelled: the bytes signed still carry the other context
    with pytest.raises(SignatureError):
        verify([load_public_key(keys.public)], DATA, json.dumps(doc).encode(), MANIFEST_CONTEXT, source="m")


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"not json",
        b'{"algorithm":"ed25519"}',
        b'{"algorithm":"rsa","context":"x","key_id":"y","signature":"zz"}',
    ],
)
def test_a_damaged_signature_file_is_refused(keys: KeyPair, damage: bytes) -> None:
    with pytest.raises(SignatureError, match="damaged"):
        verify([load_public_key(keys.public)], DATA, damage, MANIFEST_CONTEXT, source="m")


def test_no_trusted_key_is_an_error_that_says_what_to_do(keys: KeyPair) -> None:
    sig = sign(load_private_key(keys.private), DATA, MANIFEST_CONTEXT)
    with pytest.raises(SignatureError, match="--trust"):
        verify([], DATA, sig, MANIFEST_CONTEXT, source="m")


def test_bad_key_files_are_config_errors(tmp_path: Path, keys: KeyPair) -> None:
    (tmp_path / "bad.pub").write_text("ssh-rsa AAAA")
    with pytest.raises(ConfigError, match="not an airlock public key"):
        load_public_key(tmp_path / "bad.pub")
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        load_private_key(keys.public)
    with pytest.raises(ConfigError, match="cannot read"):
        load_private_key(tmp_path / "missing.key")
