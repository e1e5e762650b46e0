from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from airlock.errors import KeyStoreError, ModelNotFoundError, UnknownKeyError
from airlock.gateway.apikeys import KeyStore, check_models, check_token
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


def test_an_empty_model_list_is_refused_not_read_as_every_model(store: KeyStore) -> None:
    with pytest.raises(KeyStoreError, match="model list is empty"):
        store.create("hank", models=[])
    with pytest.raises(KeyStoreError, match="empty name"):
        store.create("hank", models=["m1", ""])
    assert store.list() == []


def test_check_models_refuses_an_unknown_name_with_the_nearest_one() -> None:
    check_models(["smollm2", "default"], ["smollm2", "default", "big"])
    with pytest.raises(ModelNotFoundError) as info:
        check_models(["smolm2"], ["smollm2", "default"])
    assert (
        info.value.message
        == "no model named 'smolm2' to give a key to (models and aliases: default, smollm2)"
    )
    assert info.value.hint == "did you mean 'smollm2'?"


# The CLI: `airlock keys create --models` against the spec serve would read.


def _airlock(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from airlock.cli.main import run

    with pytest.raises(SystemExit) as done:
        run(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AIRLOCK_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


SPEC = "models:\n  - name: smollm2\n    aliases: [default]\n    gguf: m.gguf\n    engine: {kind: llamacpp}\n"


@pytest.mark.parametrize(
    ("flag", "message"),
    [("", "--models is empty"), (" , ", "--models is empty"), ("a,,b", "--models 'a,,b' has an empty name")],
)
def test_cli_refuses_an_empty_models_flag(
    home: Path, capsys: pytest.CaptureFixture[str], flag: str, message: str
) -> None:
    code, out, err = _airlock(capsys, "keys", "create", "bob", "--models", flag)
    assert code == 2
    assert err.startswith(f"error: {message}")
    assert out == ""
    assert KeyStore(home / "home" / "keys.db").list() == []


def test_cli_refuses_a_model_the_spec_does_not_have(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "airlock.yaml").write_text(SPEC)
    code, _, err = _airlock(capsys, "keys", "create", "bob", "--models", "nosuchmodel")
    assert code == 5
    assert err == (
        "error: no model named 'nosuchmodel' to give a key to (models and aliases: default, smollm2)\n"
    )
    code, _, err = _airlock(capsys, "keys", "create", "bob", "--models", "smolm2")
    assert err.endswith("(did you mean 'smollm2'?)\n")
    code, out, _ = _airlock(capsys, "keys", "create", "bob", "--models", "smollm2,default")
    assert code == 0 and "Created key bob (smollm2, default)" in out


def test_cli_checks_models_against_config(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "other.yaml").write_text(SPEC.replace("smollm2", "qwen"))
    code, _, err = _airlock(capsys, "keys", "create", "bob", "--models", "smollm2", "--config", "other.yaml")
    assert code == 5 and "no model named 'smollm2'" in err
    assert _airlock(capsys, "keys", "create", "bob", "--models", "qwen", "-c", "other.yaml")[0] == 0


def test_cli_without_a_spec_warns_that_names_are_unchecked(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _airlock(capsys, "keys", "create", "bob", "--models", "nosuchmodel")
    assert code == 0
    assert err.startswith("warning: no airlock.yaml here, so nosuchmodel cannot be checked")
    assert "Created key bob (nosuchmodel)" in out
    code, _, err = _airlock(capsys, "keys", "create", "carl", "--models", "default")
    assert code == 0 and err == ""
