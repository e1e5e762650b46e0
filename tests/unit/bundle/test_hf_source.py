"""Packing Hugging Face models through huggingface_hub's real client, against a fake Hub on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.bundle.airgap.install import InstallOptions, install
from airlock.bundle.airgap.verify import VerifyOptions, verify
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair
from airlock.errors import IntegrityError, SourceError, UnsafeWeightsError
from airlock.testing.fake_hub import FakeHub
from airlock.testing.tiny_files import model_files
from bundle_helpers import do_pack, write_spec


@pytest.fixture(autouse=True)
def _quiet_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def hub() -> FakeHub:
    hub = FakeHub()
    files = model_files(seed=3)
    files["onnx/model.onnx"] = b"\x08\x01" * 500
    files["pytorch_model.bin"] = b"\x80\x04pickle" * 10
    hub.add_repo("org/tiny", files)
    return hub


@pytest.fixture
def url(hub: FakeHub) -> Iterator[str]:
    with hub.serve() as url:
        yield url


def _spec(tmp_path: Path, **hf: object) -> Path:
    source = {"repo": "org/tiny", "ignore": ["*.bin"], **hf}
    return write_spec(
        tmp_path / "airlock.yaml", {"models": [{"name": "tiny", "hf": source, "engine": {"kind": "vllm"}}]}
    )


def test_pack_resolves_the_branch_to_its_commit_and_records_it(
    tmp_path: Path, hub: FakeHub, url: str, keys: KeyPair
) -> None:
    result = do_pack(_spec(tmp_path), tmp_path / "b", keys, hf_endpoint=url, hf_cache=tmp_path / "hf")
    (artifact,) = result.manifest.artifacts
    commit = hub.repos["org/tiny"].refs["main"]
    assert artifact.repo == "org/tiny"
    assert (artifact.source.type, artifact.source.revision, artifact.source.commit) == ("hf", "main", commit)
    assert artifact.license == "apache-2.0"
    assert sorted(f.path for f in artifact.files) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "onnx/model.onnx",
        "tokenizer.json",
    ]
    assert verify(VerifyOptions(VolumeSet([result.out], trust=[keys.public]))).ok


def test_allow_patterns_and_files_from_other_downloads(
    tmp_path: Path, hub: FakeHub, url: str, keys: KeyPair
) -> None:
    cache = tmp_path / "hf"
    do_pack(
        _spec(tmp_path), tmp_path / "b1", keys, hf_endpoint=url, hf_cache=cache
    )  # the cache now holds more
    result = do_pack(
        _spec(tmp_path, allow=["*.json"]), tmp_path / "b2", keys, hf_endpoint=url, hf_cache=cache
    )
    assert sorted(f.path for _, f in result.manifest.iter_files()) == ["config.json", "tokenizer.json"]


def test_the_cache_is_reused(tmp_path: Path, hub: FakeHub, url: str, keys: KeyPair) -> None:
    cache = tmp_path / "hf"
    do_pack(_spec(tmp_path), tmp_path / "b1", keys, hf_endpoint=url, hf_cache=cache)
    hub.requests.clear()
    do_pack(_spec(tmp_path), tmp_path / "b2", keys, hf_endpoint=url, hf_cache=cache)
    assert not [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]], "no file downloaded twice"


def test_pack_from_the_cache_without_the_hub(tmp_path: Path, hub: FakeHub, keys: KeyPair) -> None:
    cache = tmp_path / "hf"
    with hub.serve() as url:
        first = do_pack(_spec(tmp_path), tmp_path / "b1", keys, hf_endpoint=url, hf_cache=cache)
    second = do_pack(
        _spec(tmp_path), tmp_path / "b2", keys, hf_endpoint=url, hf_cache=cache
    )  # the Hub is gone
    assert second.manifest.artifacts == first.manifest.artifacts


def test_a_pinned_commit(tmp_path: Path, hub: FakeHub, url: str, keys: KeyPair) -> None:
    old = hub.repos["org/tiny"].refs["main"]
    hub.add_repo("org/tiny", model_files(seed=9))  # main moves on
    result = do_pack(
        _spec(tmp_path, revision=old), tmp_path / "b", keys, hf_endpoint=url, hf_cache=tmp_path / "hf"
    )
    assert result.manifest.artifacts[0].source.commit == old


def test_a_damaged_download_is_caught_by_the_hubs_sha256(
    tmp_path: Path, hub: FakeHub, url: str, keys: KeyPair
) -> None:
    hub.corrupt.add("onnx/model.onnx")
    with pytest.raises(IntegrityError, match=r"onnx/model.onnx.*its source says"):
        do_pack(_spec(tmp_path), tmp_path / "b", keys, hf_endpoint=url, hf_cache=tmp_path / "hf")


def test_pickle_from_the_hub_is_refused(tmp_path: Path, url: str, keys: KeyPair) -> None:
    with pytest.raises(UnsafeWeightsError, match=r"pytorch_model\.bin"):
        do_pack(_spec(tmp_path, ignore=[]), tmp_path / "b", keys, hf_endpoint=url, hf_cache=tmp_path / "hf")


@pytest.mark.parametrize(
    ("hf", "message"),
    [
        ({"repo": "org/nope"}, "no such repo"),
        ({"revision": "v9"}, "no such revision"),
        ({"allow": ["*.xyz"]}, "pass its allow"),
    ],
)
def test_hub_errors_are_one_line(
    tmp_path: Path, url: str, keys: KeyPair, hf: dict[str, object], message: str
) -> None:
    with pytest.raises(SourceError, match=message):
        do_pack(_spec(tmp_path, **hf), tmp_path / "b", keys, hf_endpoint=url, hf_cache=tmp_path / "hf")


def test_installed_by_its_original_id(tmp_path: Path, hub: FakeHub, url: str, keys: KeyPair) -> None:
    from huggingface_hub import snapshot_download

    result = do_pack(_spec(tmp_path), tmp_path / "b", keys, hf_endpoint=url, hf_cache=tmp_path / "hf")
    store = tmp_path / "store"
    installed = install(InstallOptions(VolumeSet([result.out], trust=[keys.public]), store=store))
    commit = hub.repos["org/tiny"].refs["main"]
    assert installed.models[0].repo == "org/tiny" and installed.models[0].commit == commit
    assert (store / "hub" / "models--org--tiny" / "refs" / "main").read_text() == commit
    found = snapshot_download("org/tiny", cache_dir=store / "hub", local_files_only=True)
    assert (Path(found) / "onnx" / "model.onnx").read_bytes() == b"\x08\x01" * 500
