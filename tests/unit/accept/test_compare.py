"""Answers against golden answers: exact on the same platform, a stated tolerance elsewhere."""

from __future__ import annotations

import pytest

from airlock.accept.compare import Tolerance, compare, describe_difference, first_difference
from airlock.accept.golden import Answer


def _answer(text: str, tokens: list[str] | None = None, logprobs: list[float] | None = None) -> Answer:
    return Answer(prompt="p1", model="m", text=text, tokens=tokens, logprobs=logprobs)


def test_exact_passes_only_on_identical_text() -> None:
    same = compare(_answer("Paris."), _answer("Paris."), exact=True, tolerance=Tolerance())
    assert same.passed and same.mode == "exact" and same.detail == "identical text"
    one_char = compare(_answer("Paris."), _answer("Paris!"), exact=True, tolerance=Tolerance())
    assert not one_char.passed
    assert one_char.detail == "differs at character 5 of 6: expected 'Paris.', got 'Paris!'"


def test_first_difference_covers_prefixes() -> None:
    assert first_difference("abc", "abc") is None
    assert first_difference("abc", "abd") == 2
    assert first_difference("abc", "ab") == 2
    assert describe_difference("ab\ncd", "ab\nce").startswith(
        "differs at character 4 of 5: expected 'ab\\ncd'"
    )


def test_tolerance_counts_leading_tokens() -> None:
    golden = _answer("a b c d e f g h i j", tokens=list("abcdefghij"))
    nine = _answer("a b c d e f g h i x", tokens=[*"abcdefghi", "x"])
    result = compare(golden, nine, exact=False, tolerance=Tolerance(min_prefix_share=0.9))
    assert result.passed and result.mode == "tolerance" and result.unit == "tokens"
    assert result.prefix_share == pytest.approx(0.9)
    assert "9/10 leading tokens identical (90%)" in result.detail
    assert "within tolerance" in result.detail
    early = _answer("a x", tokens=["a", "x"])
    failed = compare(golden, early, exact=False, tolerance=Tolerance(min_prefix_share=0.9))
    assert not failed.passed
    assert "1/10 leading tokens identical (10%): below 90%" in failed.detail


def test_tolerance_checks_logprob_distance() -> None:
    golden = _answer("ab", tokens=["a", "b"], logprobs=[-0.1, -0.2])
    near = _answer("ab", tokens=["a", "b"], logprobs=[-0.15, -0.25])
    assert compare(golden, near, exact=False, tolerance=Tolerance()).logprob_delta == pytest.approx(0.05)
    far = _answer("ab", tokens=["a", "b"], logprobs=[-2.1, -2.2])
    result = compare(golden, far, exact=False, tolerance=Tolerance(max_logprob_delta=0.5))
    assert not result.passed
    assert "log-probability distance 2.000 above 0.5" in result.detail


def test_tolerance_falls_back_to_words_without_tokens() -> None:
    result = compare(_answer("the cat sat"), _answer("the cat ran"), exact=False, tolerance=Tolerance(0.5))
    assert result.unit == "words" and result.passed
    assert result.detail.startswith("2/3 leading words identical (67%)")
    empty = compare(_answer(""), _answer(""), exact=False, tolerance=Tolerance())
    assert empty.passed and empty.prefix_share == 1.0
