"""A repo id is found in a Hugging Face cache layout (airlock's store), offline; nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airlock.errors import ModelNotFoundError
from airlock.plan.facts import read_facts
from airlock.plan.locate import default_hf_cache, locate_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "vocab_size": 100, "max_position_embeddings": 256}  # fmt: skip


def make_cache(root: Path) -> Path:
    repo = root / "models--acme--tiny"
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(CONFIG))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snap


def test_repo_id_and_revision_in_the_cache(tmp_path: Path) -> None:
    snap = make_cache(tmp_path / "hub")
    assert locate_model("acme/tiny", cache_dir=tmp_path / "hub") == snap
    assert locate_model("acme/tiny", cache_dir=tmp_path / "hub", revision=COMMIT) == snap
    assert locate_model("acme/tiny", cache_dir=tmp_path) == snap  # HF_HOME given instead of its hub/
    assert read_facts(snap).architecture == "LlamaForCausalLM"


def test_missing_repo_is_a_clear_error(tmp_path: Path) -> None:
    make_cache(tmp_path / "hub")
    with pytest.raises(ModelNotFoundError, match="acme/other is not in the Hugging Face cache"):
        locate_model("acme/other", cache_dir=tmp_path / "hub")
    with pytest.raises(ModelNotFoundError, match="not a repo id"):
        locate_model("no such thing", cache_dir=tmp_path / "hub")


def test_a_local_folder_wins(tmp_path: Path) -> None:
    assert locate_model(str(tmp_path)) == tmp_path


def test_default_cache_follows_the_environment(tmp_path: Path) -> None:
    assert default_hf_cache({"HF_HUB_CACHE": str(tmp_path)}) == tmp_path
    assert default_hf_cache({"HF_HOME": str(tmp_path)}) == tmp_path / "hub"
