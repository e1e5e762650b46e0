"""An answer against its golden answer: exact text, or a stated tolerance; never a silent pass.

Exact where the model's digest, the engine, its version and the hardware are those of the recording
(greedy decoding then gives the same text). Elsewhere kernels differ and so may the last digits of a
logit, so the answer must keep ``min_prefix_share`` of the golden answer's leading tokens (words when
the engine gave no tokens) and, where both runs have log-probabilities, their mean distance over the
shared tokens must stay within ``max_logprob_delta`` (nats). Every comparison says which rule it used.

Example::

    compare(golden, new, exact=False, tolerance=Tolerance(min_prefix_share=0.9))
    # Comparison(passed=True, mode='tolerance', detail='31/32 leading tokens identical (97%) ...')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from airlock.accept.golden import Answer


@dataclass(frozen=True)
class Tolerance:
    min_prefix_share: float = 0.9  # of the golden answer's leading tokens that must be identical
    max_logprob_delta: float = 0.5  # mean |delta logprob| over the shared leading tokens, in nats

    def describe(self) -> str:
        return (
            f"at least {self.min_prefix_share:.0%} identical leading tokens, "
            f"mean log-probability distance at most {self.max_logprob_delta:g}"
        )


@dataclass(frozen=True)
class Comparison:
    prompt: str
    model: str
    mode: Literal["exact", "tolerance"]
    passed: bool
    detail: str
    expected: str
    got: str
    prefix_share: float | None = None  # identical leading units / the longer answer's units
    logprob_delta: float | None = None
    unit: Literal["characters", "tokens", "words"] = "characters"


def first_difference(expected: str, got: str) -> int | None:
    """The index of the first differing character, or None when the texts are equal."""
    if expected == got:
        return None
    for i, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return i
    return min(len(expected), len(got))


def _excerpt(text: str, at: int, width: int = 40) -> str:
    start = max(0, at - width // 2)
    piece = text[start : at + width]
    return ("…" if start else "") + repr(piece)[1:-1] + ("…" if at + width < len(text) else "")


def describe_difference(expected: str, got: str) -> str:
    at = first_difference(expected, got)
    if at is None:
        return "identical"
    return (
        f"differs at character {at} of {len(expected)}: "
        f"expected '{_excerpt(expected, at)}', got '{_excerpt(got, at)}'"
    )


def _leading(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def compare(expected: Answer, got: Answer, *, exact: bool, tolerance: Tolerance) -> Comparison:
    """``got`` against ``expected``: exact text when ``exact``, else ``tolerance``'s two rules."""
    if exact:
        same = expected.text == got.text
        detail = "identical text" if same else describe_difference(expected.text, got.text)
        return Comparison(
            prompt=expected.prompt, model=expected.model, mode="exact", passed=same, detail=detail,
            expected=expected.text, got=got.text,
        )  # fmt: skip
    unit: Literal["tokens", "words"] = "tokens"
    if expected.tokens is not None and got.tokens is not None:
        a, b = expected.tokens, got.tokens
    else:
        unit = "words"
        a, b = expected.text.split(), got.text.split()
    longest = max(len(a), len(b))
    same_lead = _leading(a, b)
    share = 1.0 if longest == 0 else same_lead / longest
    problems: list[str] = []
    if share < tolerance.min_prefix_share:
        problems.append(f"below {tolerance.min_prefix_share:.0%}")
    delta: float | None = None
    if expected.logprobs is not None and got.logprobs is not None and unit == "tokens" and same_lead:
        pairs = list(zip(expected.logprobs[:same_lead], got.logprobs[:same_lead], strict=False))
        delta = sum(abs(x - y) for x, y in pairs) / len(pairs)
        if delta > tolerance.max_logprob_delta:
            problems.append(f"log-probability distance {delta:.3f} above {tolerance.max_logprob_delta:g}")
    detail = f"{same_lead}/{longest} leading {unit} identical ({share:.0%})"
    if delta is not None:
        detail += f", mean log-probability distance {delta:.3f}"
    if problems:
        detail += ": " + "; ".join(problems) + "; " + describe_difference(expected.text, got.text)
    elif expected.text != got.text:
        detail += f" (within tolerance; {describe_difference(expected.text, got.text)})"
    return Comparison(
        prompt=expected.prompt, model=expected.model, mode="tolerance", passed=not problems, detail=detail,
        expected=expected.text, got=got.text, prefix_share=share, logprob_delta=delta, unit=unit,
    )  # fmt: skip
