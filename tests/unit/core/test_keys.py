from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from airlock.cli.keys import parse_expiry
from airlock.errors import ConfigError, KeyStoreError, ModelNotFoundError, UnknownKeyError
from airlock.gateway.apikeys import INFERENCE_SCOPES, KeyLimits, KeyStore, KeyUsage, check_models, check_token
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
    path = store.path
    assert path is not None
    files = [p for p in path.parent.iterdir() if p.name.startswith("keys.db")]  # the WAL too
    assert path in files
    for file in files:
        raw = file.read_bytes()
        assert secret.encode() not in raw
        assert token.encode() not in raw
        assert oct(file.stat().st_mode & 0o777) == "0o600", file


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


def test_key_cache_follows_the_store_at_once(store: KeyStore) -> None:
    # No refresh interval: a key created or revoked in another connection counts from the next request.
    async def scenario() -> None:
        cache = KeyCache(store)
        await cache.open()
        _, token = store.create("frank")
        assert (await cache.authenticate(f"Bearer {token}".encode())).name == "frank"
        store.revoke("frank")
        with pytest.raises(APIError) as info:
            await cache.authenticate(f"Bearer {token}".encode())
        assert info.value.status == 401
        assert info.value.code == "invalid_api_key"
        await cache.close()

    asyncio.run(scenario())


def test_key_cache_on_an_empty_database_refuses_everything(tmp_path: Path) -> None:
    async def scenario() -> None:
        cache = KeyCache(KeyStore(tmp_path / "fresh.db"))
        await cache.open()
        assert cache.count == 0
        with pytest.raises(APIError, match="Missing API key"):
            await cache.authenticate(None)
        with pytest.raises(APIError, match="Invalid or revoked"):
            await cache.authenticate(b"Bearer al-000000000000-abc")
        await cache.close()

    asyncio.run(scenario())


def test_database_schema_has_no_secret_column(store: KeyStore) -> None:
    store.create("gina")
    assert store.path is not None
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
    assert code == 0 and "Created key bob (smollm2, default; chat, completions, embeddings, models)" in out


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
    assert "Created key bob (nosuchmodel; chat, completions, embeddings, models)" in out
    code, _, err = _airlock(capsys, "keys", "create", "carl", "--models", "default")
    assert code == 0 and err == ""


# Scopes, expiry, owner and team, limits; the old schema; usage.


def test_a_key_carries_scopes_expiry_labels_and_limits(store: KeyStore) -> None:
    key, token = store.create(
        "ivy", scopes=["chat", "metrics"], owner="Ivy L", team="ml", expires_at=time.time() + 60,
        limits=KeyLimits(rpm=10, tpm=1000, tpd=5000, concurrency=2),
    )  # fmt: skip
    (listed,) = store.list()
    assert listed == key
    assert listed.granted == ("chat", "metrics")
    assert listed.may("chat") and listed.may("metrics") and not listed.may("embeddings")
    assert (listed.owner, listed.team) == ("Ivy L", "ml")
    assert listed.limits == KeyLimits(rpm=10, tpm=1000, tpd=5000, concurrency=2)
    assert store.authenticate(token) == key


def test_default_scopes_are_inference_and_admin_reads_metrics_only(store: KeyStore) -> None:
    user, _ = store.create("user")
    assert user.granted == INFERENCE_SCOPES and not user.may("metrics") and not user.may("admin")
    admin, _ = store.create("ops", scopes=["admin"])
    assert admin.may("admin") and admin.may("metrics") and not admin.may("chat")


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        (["chat", "nope"], "unknown scope 'nope'"),
        ([], "scope list is empty"),
        (["admin", "chat"], "admin routes only"),
    ],
)
def test_bad_scopes_are_refused(store: KeyStore, scopes: list[str], message: str) -> None:
    with pytest.raises(KeyStoreError, match=message):
        store.create("x", scopes=scopes)
    assert store.list() == []


def test_an_expired_key_no_longer_authenticates(store: KeyStore) -> None:
    with pytest.raises(KeyStoreError, match="in the past"):
        store.create("old", expires_at=time.time() - 1)
    key, token = store.create("soon", expires_at=time.time() + 3600)

    async def scenario() -> None:
        clock = [time.time()]
        cache = KeyCache(store, clock=lambda: clock[0])
        assert (await cache.authenticate(f"Bearer {token}".encode())).name == "soon"
        clock[0] = (key.expires_at or 0) + 1
        with pytest.raises(APIError) as info:
            await cache.authenticate(f"Bearer {token}".encode())
        assert (info.value.status, info.value.code) == (401, "expired_api_key")
        await cache.close()

    asyncio.run(scenario())


def test_limits_below_one_are_refused(store: KeyStore) -> None:
    with pytest.raises(KeyStoreError, match="rpm limit must be at least 1"):
        store.create("z", limits=KeyLimits(rpm=0))


def test_a_database_from_before_scopes_and_limits_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE api_keys (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,"
        " key_id TEXT NOT NULL UNIQUE, secret_sha256 BLOB NOT NULL, models TEXT, created_at REAL NOT NULL,"
        " revoked_at REAL);"
    )
    secret = "s3cret"
    old.execute(
        "INSERT INTO api_keys(name, key_id, secret_sha256, models, created_at) VALUES (?,?,?,?,?)",
        ("legacy", "0123456789ab", hashlib.sha256(secret.encode()).digest(), '["m1"]', 1.0),
    )
    old.commit()
    old.close()
    store = KeyStore(path)
    key = store.authenticate(f"al-0123456789ab-{secret}")
    assert key is not None and key.name == "legacy" and key.models == ("m1",)
    assert key.granted == INFERENCE_SCOPES and not key.limits.any
    store.create("new", limits=KeyLimits(rpm=1))
    assert [k.name for k in store.list()] == ["legacy", "new"]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_usage_is_per_key_today_and_in_total(store: KeyStore) -> None:
    from airlock.gateway.state import SqliteState, UsageRow

    key, _ = store.create("kim")
    assert store.usage() == {}
    day = int(time.time() // 86400)

    async def write() -> None:
        state = SqliteState(store.db.target)  # type: ignore[arg-type]
        await state.add_usage([UsageRow(key.key_id, day - 1, 5, 50, 500, 100.0)])
        await state.add_usage([UsageRow(key.key_id, day, 2, 20, 200, 200.0)])
        await state.add_usage([UsageRow(key.key_id, day, 1, 1, 1, 150.0)])
        await state.close()

    asyncio.run(write())
    assert store.usage()[key.key_id] == KeyUsage(3, 21, 201, 8, 71, 701, 200.0)
    assert store.usage(now=(day + 1) * 86400.0)[key.key_id] == KeyUsage(0, 0, 0, 8, 71, 701, 200.0)


@pytest.mark.parametrize(
    ("value", "seconds"), [("30d", 30 * 86400), ("12h", 12 * 3600), ("90m", 90 * 60), ("2w", 14 * 86400)]
)
def test_expiry_durations(value: str, seconds: int) -> None:
    assert parse_expiry(value, now=1000.0) == 1000.0 + seconds


def test_expiry_dates_are_utc_and_never_in_the_past() -> None:
    assert parse_expiry("2030-01-31", now=0) == 1896048000.0
    assert parse_expiry("2030-01-31T01:00+01:00", now=0) == 1896048000.0
    with pytest.raises(ConfigError, match="in the past"):
        parse_expiry("2020-01-01")
    with pytest.raises(ConfigError, match="neither a duration nor a date"):
        parse_expiry("soon")
    with pytest.raises(ConfigError, match="is now"):
        parse_expiry("0d")


def test_cli_creates_a_scoped_limited_key_and_lists_its_usage(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _airlock(
        capsys, "keys", "create", "lee", "--scope", "chat,metrics", "--expires", "30d", "--owner", "Lee",
        "--team", "search", "--rpm", "60", "--tpm", "9000", "--tpd", "90000", "--concurrency", "4",
    )  # fmt: skip
    assert code == 0, err
    assert (
        "Created key lee (all models; chat, metrics; 60 req/min, 9000 tok/min, 90000 tok/day, 4 at once;"
        in out
    )
    code, out, _ = _airlock(capsys, "keys", "list", "--json")
    (row,) = json.loads(out)
    assert row["scopes"] == ["chat", "metrics"] and (row["owner"], row["team"]) == ("Lee", "search")
    assert row["limits"] == {"rpm": 60, "tpm": 9000, "tpd": 90000, "concurrency": 4}
    assert row["usage"] is None
    code, out, _ = _airlock(capsys, "keys", "list")
    assert "lee" in out and "60 req/min" in out and "Lee/search" in out
    code, _, err = _airlock(capsys, "keys", "create", "bad", "--scope", "admin,chat")
    assert code == 2 and "admin routes only" in err
    code, _, err = _airlock(capsys, "keys", "create", "bad", "--rpm", "0")
    assert code == 2


def test_cli_uses_the_spec_database(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # gateway.database in the spec decides where keys go; a PostgreSQL URL nobody serves is a clear error
    (home / "airlock.yaml").write_text(SPEC + "gateway:\n  database: postgresql://nobody@127.0.0.1:9/none\n")
    code, _, err = _airlock(capsys, "keys", "list")
    assert code == 4
    assert err.startswith("error: key database postgresql://nobody@127.0.0.1:9/none: cannot connect")


def test_key_admin_actions_go_into_the_gateways_audit_chain(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from airlock.gateway.audit_verify import verify

    (home / "airlock.yaml").write_text(SPEC + "gateway:\n  audit_log: audit/audit.jsonl\n")
    assert _airlock(capsys, "keys", "create", "ana", "--scope", "chat")[0] == 0
    assert _airlock(capsys, "keys", "revoke", "ana")[0] == 0
    lines = [json.loads(line) for line in (home / "audit" / "audit.jsonl").read_text().splitlines()]
    assert [(r["event"], r["action"], r["key"]) for r in lines] == [
        ("admin", "key_create", "ana"),
        ("admin", "key_revoke", "ana"),
    ]
    assert verify([home / "audit" / "audit.jsonl"]).ok

    # the log cannot be written (a folder where the file should be; chmod does not stop root): the
    # action does not stand
    (home / "audit" / "audit.jsonl").rename(home / "audit" / "kept.jsonl")
    (home / "audit" / "audit.jsonl").mkdir()
    code, _, err = _airlock(capsys, "keys", "create", "ben")
    assert code == 4 and "cannot be written" in err and "the new key 'ben' was revoked" in err
    code, out, _ = _airlock(capsys, "keys", "list", "--json")
    assert [row["name"] for row in json.loads(out) if row["name"] == "ben"] == []
