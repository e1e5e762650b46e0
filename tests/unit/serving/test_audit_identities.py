"""serve names each model's weights in the audit from the store's record of what was installed."""

from __future__ import annotations

from pathlib import Path

from airlock.serving.stack import audit_identities
from airlock.spec import parse_spec
from airlock.store.db import StoreDb, StoredFile, StoredModel
from airlock.store.store import Store


def _stored(commit: str, installed: str, sha: str) -> StoredModel:
    return StoredModel(
        name="tiny", repo="local/tiny", revision=commit, commit=commit, source="local",
        files=[StoredFile(path="model.gguf", size=3, sha256=sha)], bundle="b" * 64, installed=installed,
    )  # fmt: skip


def test_the_installed_commit_the_spec_names_is_the_one_audited(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.ensure()
    old, new = "1" * 40, "2" * 40
    store.save_db(StoreDb(models=[_stored(old, "2026-01-01T00:00:00Z", "a" * 64),
                                  _stored(new, "2026-02-01T00:00:00Z", "c" * 64)]))  # fmt: skip
    spec = parse_spec(
        {
            "gateway": {"audit_log": str(tmp_path / "audit.jsonl")},
            "models": [
                {
                    "name": "served",
                    "hf": {"repo": "local/tiny", "revision": old},
                    "engine": {"kind": "llamacpp"},
                },
                {"name": "elsewhere", "engine": {"kind": "remote", "url": "http://10.0.0.5:8000/v1"}},
            ],
        },
        source="t",
    )
    found = audit_identities(spec, store.root)
    assert list(found) == ["served"]
    assert (found["served"].commit, found["served"].bundle) == (old, "b" * 64)
    assert found["served"].digest.startswith("sha256:")
    without_audit = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"audit_log": None})})
    assert audit_identities(without_audit, store.root) == {}
