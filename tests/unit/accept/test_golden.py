"""The prompts file and the golden file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airlock.accept.golden import GoldenFile, Sampling, read_golden, read_prompts
from airlock.accept.record import pairs_for
from airlock.errors import ConfigError
from airlock.spec import LlamaCppEngineSpec, ModelSpec, Spec


def test_prompts_read_as_messages(tmp_path: Path) -> None:
    path = tmp_path / "golden.jsonl"
    path.write_text(
        '{"id": "a", "prompt": "hi"}\n\n'
        '{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x"}], "max_tokens": 8}\n'
    )
    first, second = read_prompts(path)
    assert first.id == "a" and first.messages[0].role == "user" and first.messages[0].content == "hi"
    assert second.id == "line-3" and second.max_tokens == 8 and len(second.messages) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', ":2: the prompt id 'a' is used twice"),
        ('{"id": "a", "prompt": "x"}\nnot json\n', ":2: not a prompt"),
        ('{"id": "a", "prompt": "x", "messages": []}\n', ":1: not a prompt"),
        ("\n", "no prompts"),
    ],
)
def test_bad_prompts_name_the_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        read_prompts(path)


def test_pairs_follow_each_prompts_model(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "all", "prompt": "x"}\n{"id": "one", "prompt": "y", "model": "b"}\n')
    engine = LlamaCppEngineSpec(kind="llamacpp")
    spec = Spec(models=[ModelSpec(name=n, gguf=tmp_path / f"{n}.gguf", engine=engine) for n in ("a", "b")])
    assert pairs_for(spec, read_prompts(path)) == [("all", "a"), ("all", "b"), ("one", "b")]
    path.write_text('{"id": "x", "prompt": "y", "model": "c"}\n')
    with pytest.raises(ConfigError, match="for model 'c', which the spec does not serve"):
        pairs_for(spec, read_prompts(path))


def test_golden_file_round_trips_and_refuses_others(tmp_path: Path) -> None:
    golden = GoldenFile(
        created="2026-01-01T00:00:00Z", airlock_version="0.1.0", sampling=Sampling(), models=[], prompts=[],
        answers=[],
    )  # fmt: skip
    path = tmp_path / "golden.json"
    path.write_text(golden.model_dump_json())
    assert read_golden(path) == golden
    path.write_text('{"version": 2}')
    with pytest.raises(ConfigError, match="not an airlock golden file"):
        read_golden(path)
    with pytest.raises(ConfigError, match="cannot read the golden file"):
        read_golden(tmp_path / "absent.json")


def test_answers_must_name_prompts_the_file_holds(tmp_path: Path) -> None:
    data = {
        "created": "x", "airlock_version": "0.1.0", "sampling": {}, "models": [], "prompts": [],
        "answers": [{"prompt": "ghost", "model": "m", "text": "boo"}],
    }  # fmt: skip
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="answers to prompts the file does not hold: ghost"):
        read_golden(path)
