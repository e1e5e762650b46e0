"""Published-config fixtures (config.json facts + parameter counts, each with its source), as ``load_facts``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airlock.plan.facts import ModelFacts, WeightSizes, from_config

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    assert data["source"], f"{name}: every fixture records its source"
    return data


def facts(name: str) -> ModelFacts:
    data = fixture(name)
    w = data["weights"]  # None: estimated from the config's shapes, as for a folder without weights
    sizes = WeightSizes(w["bytes"], w["params"], w["embedding_bytes"], w["lm_head_bytes"]) if w else None
    return from_config(data["config"], path=FIXTURES / name, sizes=sizes)


@pytest.fixture(autouse=True)
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan tests never reach huggingface.co: offline, and a Hub endpoint nothing listens on (a test of
    the Hub path names the fake Hub's endpoint and clears HF_HUB_OFFLINE itself)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


@pytest.fixture
def load_facts() -> Callable[[str], ModelFacts]:
    return facts
