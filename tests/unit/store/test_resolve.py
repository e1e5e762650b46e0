"""serve finds models in the store: by hf id and revision, GGUF files by name, absent local folders by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from airlock.engines.llamacpp import llamacpp_engine
from airlock.engines.vllm import vllm_engine
from airlock.errors import ModelNotFoundError
from airlock.settings import Settings
from airlock.spec import HFSource, LlamaCppEngineSpec, ModelSpec, VllmEngineSpec
from airlock.store import resolve_gguf, resolve_model_dir, snapshot_dir
from airlock.store.place import make_snapshot, symlink_atomic, write_ref

COMMIT = "a" * 40


def _repo(
    store: Path, repo: str, files: dict[str, bytes], *, ref: str = "main", commit: str = COMMIT
) -> Path:
    repo_dir = store / "hub" / ("models--" + repo.replace("/", "--"))
    shas = {}
    for rel, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "blobs" / sha).write_bytes(data)
        shas[rel] = sha
    snapshot = make_snapshot(repo_dir, commit, shas)
    write_ref(repo_dir, ref, commit)
    return snapshot


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"AIRLOCK_HOME": str(tmp_path / "home"), "AIRLOCK_VLLM_PYTHON": "/usr/bin/python3"}
    )


def test_hf_models_resolve_through_refs_or_a_commit(tmp_path: Path) -> None:
    snapshot = _repo(tmp_path, "org/m", {"config.json": b"{}", "sub/tok.json": b"[]"})
    assert snapshot_dir(tmp_path, "org/m") == snapshot
    assert snapshot_dir(tmp_path, "org/m", COMMIT) == snapshot
    assert (snapshot / "sub" / "tok.json").read_bytes() == b"[]"
    with pytest.raises(ModelNotFoundError, match=r"org/m@v2 is not in the store") as info:
        snapshot_dir(tmp_path, "org/m", "v2")
    assert "airlock install" in str(info.value)


def test_a_local_folder_that_is_not_here_is_found_by_its_model_name(tmp_path: Path) -> None:
    snapshot = _repo(tmp_path / "store", "local/tiny", {"config.json": b"{}"})
    model = ModelSpec(name="tiny", path=tmp_path / "gone", engine=VllmEngineSpec(kind="vllm"))
    assert resolve_model_dir(model, tmp_path / "store") == snapshot
    assert resolve_model_dir(model, None) == tmp_path / "gone", "without a store, the spec's path as given"
    other = ModelSpec(name="other", path=tmp_path / "gone", engine=VllmEngineSpec(kind="vllm"))
    with pytest.raises(ModelNotFoundError, match="does not exist, and the store"):
        resolve_model_dir(other, tmp_path / "store")


def test_gguf_by_file_name_and_by_repo(tmp_path: Path) -> None:
    store = tmp_path / "store"
    snapshot = _repo(store, "org/g", {"a.Q4_0.gguf": b"GGUF0", "a.Q8_0.gguf": b"GGUF8"})
    symlink_atomic(
        "../hub/models--org--g/snapshots/" + COMMIT + "/a.Q8_0.gguf", store / "gguf" / "a.Q8_0.gguf"
    )
    by_name = ModelSpec(
        name="x", gguf=tmp_path / "elsewhere" / "a.Q8_0.gguf", engine=LlamaCppEngineSpec(kind="llamacpp")
    )
    assert resolve_gguf(by_name, store).read_bytes() == b"GGUF8"
    two = ModelSpec(name="x", hf=HFSource(repo="org/g"), engine=LlamaCppEngineSpec(kind="llamacpp"))
    with pytest.raises(ModelNotFoundError, match="holds 2 GGUF files") as info:
        resolve_gguf(two, store)
    assert "allow" in str(info.value)
    one = ModelSpec(
        name="x", hf=HFSource(repo="org/g", allow=["*Q4_0*"]), engine=LlamaCppEngineSpec(kind="llamacpp")
    )
    assert resolve_gguf(one, store) == snapshot / "a.Q4_0.gguf"


def test_vllm_serves_the_snapshot_with_hf_home_at_the_store(tmp_path: Path, settings: Settings) -> None:
    snapshot = _repo(tmp_path / "store", "org/m", {"config.json": b"{}"})
    model = ModelSpec(name="m", hf=HFSource(repo="org/m"), engine=VllmEngineSpec(kind="vllm"))
    config = vllm_engine(model, model.engine, settings, port=5000, api_key="k", store=tmp_path / "store")  # type: ignore[arg-type]
    assert config.launch is not None
    argv = list(config.launch.argv)
    assert argv[argv.index("--model") + 1] == str(snapshot)
    env = config.launch.env
    assert env["HF_HOME"] == str(tmp_path / "store") and env["HF_HUB_OFFLINE"] == "1"


def test_vllm_in_a_container_mounts_the_whole_store(tmp_path: Path, settings: Settings) -> None:
    snapshot = _repo(tmp_path / "store", "org/m", {"config.json": b"{}"})
    engine = VllmEngineSpec(kind="vllm", image="vllm/vllm-openai:v0.6.3")
    model = ModelSpec(name="m", hf=HFSource(repo="org/m"), engine=engine)
    config = vllm_engine(model, engine, settings, port=5000, api_key="k", store=tmp_path / "store")
    assert config.launch is not None
    argv = list(config.launch.argv)
    assert f"{tmp_path / 'store'}:/store:ro" in argv, "snapshot links point into ../../blobs: mount the store"
    assert argv[argv.index("--model") + 1] == "/store/" + snapshot.relative_to(tmp_path / "store").as_posix()


def test_llamacpp_serves_a_gguf_from_the_store(tmp_path: Path, settings: Settings) -> None:
    snapshot = _repo(tmp_path / "store", "org/g", {"m.gguf": b"GGUF"})
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    engine = LlamaCppEngineSpec(kind="llamacpp", binary=binary)
    model = ModelSpec(name="g", hf=HFSource(repo="org/g"), engine=engine)
    config = llamacpp_engine(model, engine, settings, port=5001, api_key="k", store=tmp_path / "store")
    assert config.launch is not None
    argv = list(config.launch.argv)
    assert argv[argv.index("--model") + 1] == str(snapshot / "m.gguf")
