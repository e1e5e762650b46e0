"""Prompt sources: seeded synthetic prompts, JSONL datasets (with errors naming file and line), sizing."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.bench.workload import WORDS, SyntheticPrompts, fit_tokens, load_dataset
from airlock.errors import DatasetError, EndpointError


def test_synthetic_prompts_are_seeded_and_distinct() -> None:
    a = SyntheticPrompts(50, output_tokens=7, endpoint="chat", seed=3)
    b = SyntheticPrompts(50, output_tokens=7, endpoint="chat", seed=3)
    first, second = a.next(), a.next()
    assert first == b.next() and second == b.next()
    assert first.max_tokens == 7 and first.text is None
    assert first.messages is not None
    text = first.messages[0]["content"]
    assert len(text.split()) == 50 and set(text.split()) <= set(WORDS)
    assert second.messages is not None
    assert text.split()[:5] != second.messages[0]["content"].split()[:5]  # no shared prefix to cache
    assert SyntheticPrompts(50, output_tokens=7, endpoint="chat", seed=4).next() != first


def test_synthetic_prompts_for_completions() -> None:
    prompt = SyntheticPrompts(3, output_tokens=2, endpoint="completions").next()
    assert prompt.messages is None and prompt.text is not None and len(prompt.text.split()) == 3


def test_dataset_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        "# a comment\n"
        '{"prompt": "one"}\n'
        "\n"
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "two"}], "max_tokens": 5}\n'
        '{"prompt": "three", "output_tokens": 9}\n'
    )
    prompts = load_dataset(str(path), output_tokens=64, endpoint="chat", seed=1)
    assert len(prompts.prompts) == 3
    assert [p.max_tokens for p in prompts.prompts] == [64, 5, 9]
    assert prompts.prompts[0].messages == ({"role": "user", "content": "one"},)
    seen = [prompts.next() for _ in range(6)]
    assert sorted(map(repr, seen[:3])) == sorted(map(repr, prompts.prompts))  # each once per round
    assert sorted(map(repr, seen[3:])) == sorted(map(repr, prompts.prompts))
    assert "3 prompts" in prompts.describe()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"text": "x"}', "needs a non-empty string 'prompt'"),
        ('{"prompt": "  "}', "non-empty string"),
        ('{"prompt": "x", "max_tokens": 0}', "max_tokens must be a positive integer"),
        ('{"prompt": "x", "max_tokens": true}', "max_tokens must be a positive integer"),
        ('{"messages": []}', "non-empty list"),
        ('{"messages": [{"content": "x"}]}', "non-empty list"),
    ],
)
def test_dataset_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(str(path), output_tokens=8, endpoint="chat")
    assert f"{path}:2" in str(info.value)


def test_dataset_messages_need_the_chat_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(DatasetError, match="--endpoint chat"):
        load_dataset(str(path), output_tokens=8, endpoint="completions")


def test_dataset_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset file"):
        load_dataset(str(tmp_path / "nope.jsonl"), output_tokens=8, endpoint="chat")
    (tmp_path / "empty.jsonl").write_text("# nothing\n\n")
    with pytest.raises(DatasetError, match="holds no prompts"):
        load_dataset(str(tmp_path / "empty.jsonl"), output_tokens=8, endpoint="chat")


def test_builtin_dataset_ships_with_airlock() -> None:
    prompts = load_dataset("builtin:chat", output_tokens=32, endpoint="chat")
    assert len(prompts.prompts) >= 80
    assert any(p.messages and p.messages[0]["role"] == "system" for p in prompts.prompts)
    with pytest.raises(DatasetError, match="builtin:chat"):
        load_dataset("builtin:nope", output_tokens=8, endpoint="chat")


def test_fit_tokens_from_two_probes() -> None:
    fit = fit_tokens((16, 40), (272, 296))  # a 24-token template, one token per word
    assert fit.intercept == pytest.approx(24) and fit.per_word == pytest.approx(1)
    assert fit.words_for(256) == 232
    assert fit.words_for(3) == 1  # never fewer than one word
    fit = fit_tokens((10, 25), (110, 155))  # 1.3 tokens per word
    assert fit.words_for(142) == 100
    with pytest.raises(EndpointError, match="does not grow"):
        fit_tokens((16, 30), (32, 30))
