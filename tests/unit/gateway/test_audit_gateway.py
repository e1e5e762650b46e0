"""The audit log as the gateway writes it: who used which model, hashes instead of text, and fail
closed (503) while it cannot be written."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import httpx
import orjson
import pytest

from airlock.gateway.apikeys import KeyStore
from airlock.gateway.audit import model_identities
from airlock.gateway.audit_verify import verify
from airlock.gateway.auth import KeyCache
from airlock.spec import GatewaySpec
from airlock.store.db import StoredFile, StoredModel
from harness import GatewayThread, fake_engine_config

BODY = {"model": "tiny", "messages": [{"role": "user", "content": "classified words here"}], "max_tokens": 3}


def audit_lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def wait_for(what: str, check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[KeyStore, str, str]:
    store = KeyStore(tmp_path / "keys.db")
    key, token = store.create("alice")
    return store, token, key.key_id


def gateway(tmp_path: Path, store: KeyStore, **spec: object) -> GatewayThread:
    config = GatewaySpec(audit_log=tmp_path / "audit" / "audit.jsonl", audit_flush_ms=10, **spec)
    return GatewayThread(
        [fake_engine_config("tiny")], tmp_path / "logs", gateway=config, keys=KeyCache(store)
    )


def test_each_request_is_a_chained_line_with_who_what_and_hashes_not_text(
    tmp_path: Path, keyed: tuple[KeyStore, str, str]
) -> None:
    store, token, key_id = keyed
    raw = orjson.dumps(BODY)
    with gateway(tmp_path, store) as gw:
        r = httpx.post(gw.url + "/v1/chat/completions", content=raw,
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 200
        assert httpx.get(gw.url + "/v1/models").status_code == 401
    path = tmp_path / "audit" / "audit.jsonl"
    assert verify([path]).ok
    lines = audit_lines(path)
    assert [x["event"] for x in lines] == ["audit_start", "request", "request", "audit_stop"]
    chat, refused = lines[1], lines[2]
    assert chat["key_id"] == key_id and chat["key"] == "alice"
    assert chat["route"] == "/v1/chat/completions" and chat["model"] == "tiny" and chat["engine"] == "fake"
    assert chat["status"] == 200 and chat["client"] == "127.0.0.1"
    assert (chat["prompt_tokens"], chat["completion_tokens"]) == (3, 3)
    assert isinstance(chat["ms"], float) and len(str(chat["request_id"])) == 32
    assert chat["request_sha256"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert chat["response_sha256"] == "sha256:" + hashlib.sha256(r.content).hexdigest()
    assert b"classified" not in path.read_bytes()
    assert (refused["status"], refused["key"], refused["key_id"]) == (401, "-", None)


def test_the_model_identity_is_the_stores_digest_commit_and_bundle() -> None:
    files = [
        StoredFile(path="b.gguf", size=3, sha256="b" * 64),
        StoredFile(path="a.json", size=1, sha256="a" * 64),
    ]
    model = StoredModel(name="tiny", repo="local/tiny", revision="main", commit="c" * 40, source="local",
                        files=files, bundle="bundle-1", installed="2026-11-30T00:00:00Z")  # fmt: skip
    identity = model_identities([model])["tiny"]
    listing = f"a.json {'a' * 64}\nb.gguf {'b' * 64}\n".encode()
    assert identity.digest == "sha256:" + hashlib.sha256(listing).hexdigest()
    assert (identity.commit, identity.bundle) == ("c" * 40, "bundle-1")


def test_an_audit_log_that_cannot_be_written_closes_the_gateway_until_it_can(
    tmp_path: Path, keyed: tuple[KeyStore, str, str]
) -> None:
    store, token, _ = keyed
    folder = tmp_path / "audit"
    headers = {"Authorization": f"Bearer {token}"}
    with gateway(tmp_path, store) as gw, httpx.Client(base_url=gw.url, headers=headers) as http:
        assert http.post("/v1/chat/completions", json=BODY).status_code == 200
        log = folder / "audit.jsonl"
        wait_for("the first lines were not written", lambda: b'"request"' in log.read_bytes())
        shutil.rmtree(folder)  # the audit folder is deleted under the running gateway
        http.get("/v1/models")  # a line to write: the writer finds it cannot
        wait_for("the gateway did not notice", lambda: http.get("/ready").status_code == 503)
        assert "cannot be written" in http.get("/ready").json()["audit"]
        r = http.post("/v1/chat/completions", json=BODY)
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["code"] == "audit_unavailable" and "audit log" in error["message"]
        assert r.headers["retry-after"] == "5"
        assert http.get("/health").status_code == 200  # alive, only closed
        folder.mkdir()
        wait_for("the gateway did not reopen", lambda: http.get("/ready").status_code == 200)
        assert http.post("/v1/chat/completions", json=BODY).status_code == 200
    events = [x["event"] for x in audit_lines(folder / "audit.jsonl")]
    assert events[0] == "audit_reopened" and "request" in events


def test_fail_open_serves_on(tmp_path: Path, keyed: tuple[KeyStore, str, str]) -> None:
    store, token, _ = keyed
    headers = {"Authorization": f"Bearer {token}"}
    with (
        gateway(tmp_path, store, audit_fail_open=True) as gw,
        httpx.Client(base_url=gw.url, headers=headers) as http,
    ):
        shutil.rmtree(tmp_path / "audit")
        http.get("/v1/models")
        wait_for("the gateway did not notice", lambda: "cannot" in http.get("/ready").json()["audit"])
        assert http.get("/ready").status_code == 200
        assert http.post("/v1/chat/completions", json=BODY).status_code == 200
