"""Fixtures for bundle tests: keys, a staging folder with a spec, and that spec packed and signed."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.bundle.format.sign import KeyPair, generate_keypair
from airlock.bundle.staging.pack import PackResult
from bundle_helpers import Staging, do_pack, make_staging


@pytest.fixture
def keys(tmp_path: Path) -> KeyPair:
    return generate_keypair(tmp_path / "keys" / "staging.key")


@pytest.fixture
def other_keys(tmp_path: Path) -> KeyPair:
    return generate_keypair(tmp_path / "keys" / "other.key")


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    return make_staging(tmp_path / "staging")


@pytest.fixture
def bundle(tmp_path: Path, staging: Staging, keys: KeyPair) -> PackResult:
    """The staging spec packed, signed, over volumes of 100 kB (so the GGUF splits over volumes)."""
    return do_pack(staging.spec, tmp_path / "bundle", keys, volume_size=100_000)
