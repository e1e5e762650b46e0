from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from airlock.errors import KeyStoreError, UnknownKeyError
from airlock.gateway.apikeys import KeyStore, check_token
from airlock.gateway.auth import KeyCache
from airlock.gateway.errors import APIError


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.db")


def test_create_authenticate_revoke(store: KeyStore) -> None:
    key, token = store.create("alice", models=["m1"])
    assert token.startswith(f"al-{key.key_id}-")
    found = store.authenticate(token)
    assert found is not None
    assert found.name == "alice"
    assert found.models == ("m1",)
    assert found.allows("m1")
    assert not found.allows("m2")
    store.revoke("alice")
    assert store.authenticate(token) is None
    assert [k.name for k in store.list()] == []
    assert [k.name for k in store.list(include_revoked=True)] == ["alice"]


def test_only_the_hash_is_stored(store: KeyStore) -> None:
    _, token = store.create("bob")
    secret = token.split("-", 2)[2]
    raw = store.path.read_bytes()
    assert secret.encode() not in raw
    assert token.encode() not in raw
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    "token",
    ["", "al", "al--x", "al-000000000000-wrong", "sk-openai-style", "al-123-short-id", "Bearer al-x-y"],
)
def test_wrong_tokens_are_refused(store: KeyStore, token: str) -> None:
    store.create("carol")
    assert store.authenticate(token) is None


def test_a_right_id_with_a_wrong_secret_is_refused(store: KeyStore) -> None:
    key, token = store.create("dave")
    assert store.authenticate(f"al-{key.key_id}-{'x' * 43}") is None
    assert store.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None


def test_names_are_unique_among_active_keys(store: KeyStore) -> None:
    store.create("eve")
    with pytest.raises(KeyStoreError, match="exists"):
        store.create("eve")
    store.revoke("eve")
    store.create("eve")  # a revoked name may be used again
    assert len(store.list(include_revoked=True)) == 2


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "semi;colon"])
def test_bad_names(store: KeyStore, name: str) -> None:
    with pytest.raises(KeyStoreError, match="key name"):
        store.create(name)


def test_revoking_an_unknown_key(store: KeyStore) -> None:
    with pytest.raises(UnknownKeyError, match="no active key named 'zed'"):
        store.revoke("zed")


def test_unreadable_database_is_a_keystore_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(KeyStoreError, match=str(path)):
        KeyStore(path).list()


def test_check_token_with_an_empty_table() -> None:
    assert check_token({}, "al-000000000000-abc") is None


def test_key_cache_sees_changes_after_refresh(store: KeyStore) -> None:
    cache = KeyCache(store, refresh_s=0.0)
    _, token = store.create("frank")
    assert cache.authenticate(f"Bearer {token}".encode()).name == "frank"
    store.revoke("frank")
    with pytest.raises(APIError) as info:
        cache.authenticate(f"Bearer {token}".encode())
    assert info.value.status == 401
    assert info.value.code == "invalid_api_key"


def test_key_cache_without_a_database_refuses_everything(tmp_path: Path) -> None:
    cache = KeyCache(KeyStore(tmp_path / "absent.db"))
    assert cache.count == 0
    with pytest.raises(APIError, match="Missing API key"):
        cache.authenticate(None)
    assert not (tmp_path / "absent.db").exists()


def test_database_schema_has_no_secret_column(store: KeyStore) -> None:
    store.create("gina")
    columns = [row[1] for row in sqlite3.connect(store.path).execute("PRAGMA table_info(api_keys)")]
    assert "secret_sha256" in columns
    assert "secret" not in columns
