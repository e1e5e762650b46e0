"""The prompts a run sends: synthetic ones of a chosen length, or lines of a JSONL dataset; all offline.

Synthetic prompts are random common words drawn from a seeded generator, so every request differs
from the first word on (an engine's prefix cache cannot make them look faster than real traffic)
and a run can be repeated exactly. Their length is set in *words*; how many words make N tokens is
measured against the server itself (see :func:`fit_tokens`), never guessed.

A dataset is a JSONL file, one request per line, either form::

    {"prompt": "Explain what a checksum is."}
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
     "max_tokens": 64}

``max_tokens`` (or ``output_tokens``) on a line overrides ``--output-tokens``. Blank lines and lines
starting with ``#`` are skipped. ``builtin:chat`` names the set of prompts shipped with airlock::

    prompts = load_dataset("builtin:chat", output_tokens=128, endpoint="chat", seed=0)
    prompts.next().messages   # ({'role': 'user', 'content': '...'},)
"""

from __future__ import annotations

import importlib.resources
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from airlock.common.words import counted
from airlock.errors import DatasetError, EndpointError

BUILTIN_PREFIX = "builtin:"
BUILTIN_DATASETS = ("chat",)

# Short, common English words: each is one token in the vocabularies of most current models.
WORDS = tuple(
    """the of and to in is it you that he was for on are as with his they at be this have from or one
    had by word but not what all were we when your can said there use an each which she do how their
    if will up other about out many then them these so some her would make like him into time has
    look two more write go see number no way could people my than first water been call who oil its
    now find long down day did get come made may part over new sound take only little work know place
    year live me back give most very after thing our just name good sentence man think say great where
    help through much before line right too mean old any same tell boy follow came want show also
    around form three small set put end does another well large must big even such because turn here
    why ask went men read need land different home us move try kind hand picture again change off
    play spell air away animal house point page letter mother answer found study still learn should
    world high every near add food between own below country plant last school father keep tree never
    start city earth eye light thought head under story saw left few while along might close something
    seem next hard open example begin life always those both paper together got group often run""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class Prompt:
    """One request's input: ``messages`` for the chat endpoint, ``text`` for completions."""

    max_tokens: int
    text: str | None = None
    messages: tuple[Mapping[str, Any], ...] | None = None


class Prompts(Protocol):
    """A source of prompts; ``next()`` never runs out (datasets cycle)."""

    def next(self) -> Prompt: ...

    def describe(self) -> str: ...


def _prompt(text: str, max_tokens: int, endpoint: str) -> Prompt:
    if endpoint == "chat":
        return Prompt(max_tokens=max_tokens, messages=({"role": "user", "content": text},))
    return Prompt(max_tokens=max_tokens, text=text)


class SyntheticPrompts:
    """``words`` random common words per prompt, from a generator seeded with ``seed``."""

    def __init__(self, words: int, *, output_tokens: int, endpoint: str, seed: int | str = 0) -> None:
        self.words = max(1, words)
        self.output_tokens = output_tokens
        self.endpoint = endpoint
        self._rng = random.Random(seed)

    def text(self) -> str:
        return " ".join(self._rng.choices(WORDS, k=self.words))

    def next(self) -> Prompt:
        return _prompt(self.text(), self.output_tokens, self.endpoint)

    def describe(self) -> str:
        return f"synthetic: {counted(self.words, 'random word')}, max_tokens {self.output_tokens}"

    def reseeded(self, seed: int | str) -> SyntheticPrompts:
        return SyntheticPrompts(
            self.words, output_tokens=self.output_tokens, endpoint=self.endpoint, seed=seed
        )


class DatasetPrompts:
    """The lines of a dataset in an order shuffled by ``seed``, cycling when they run out."""

    def __init__(self, prompts: Sequence[Prompt], *, name: str, seed: int | str = 0) -> None:
        if not prompts:
            raise DatasetError(f"{name}: holds no prompts")
        self.name = name
        self.prompts = list(prompts)
        self._rng = random.Random(seed)
        self._order: list[int] = []

    def next(self) -> Prompt:
        if not self._order:
            self._order = list(range(len(self.prompts)))
            self._rng.shuffle(self._order)
        return self.prompts[self._order.pop()]

    def describe(self) -> str:
        return f"dataset {self.name} ({counted(len(self.prompts), 'prompt')})"

    def reseeded(self, seed: int | str) -> DatasetPrompts:
        """The same prompts in another order: no second read of the file."""
        return DatasetPrompts(self.prompts, name=self.name, seed=seed)


def _parse_line(raw: str, where: str, *, output_tokens: int, endpoint: str) -> Prompt:
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(item, dict):
        raise DatasetError(f"{where}: each line must be a JSON object with 'prompt' or 'messages'")
    max_tokens = item.get("max_tokens", item.get("output_tokens", output_tokens))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise DatasetError(f"{where}: max_tokens must be a positive integer, not {max_tokens!r}")
    if "messages" in item:
        messages = item["messages"]
        if not (
            isinstance(messages, list)
            and messages
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
        ):
            raise DatasetError(
                f"{where}: 'messages' must be a non-empty list of {{'role': ..., 'content': ...}}"
            )
        if endpoint != "chat":
            raise DatasetError(
                f"{where}: has 'messages', which only the chat endpoint takes (--endpoint chat)"
            )
        return Prompt(max_tokens=max_tokens, messages=tuple(messages))
    prompt = item.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DatasetError(f"{where}: needs a non-empty string 'prompt' or a 'messages' list")
    return _prompt(prompt, max_tokens, endpoint)


def _read(source: str) -> tuple[str, str]:
    """(text, name) of a dataset path or ``builtin:NAME``."""
    if source.startswith(BUILTIN_PREFIX):
        name = source.removeprefix(BUILTIN_PREFIX)
        if name not in BUILTIN_DATASETS:
            raise DatasetError(
                f"no built-in dataset {name!r}; built in: {', '.join(BUILTIN_PREFIX + n for n in BUILTIN_DATASETS)}"
            )
        resource = importlib.resources.files("airlock") / "data" / "bench" / f"{name}.jsonl"
        return resource.read_text(encoding="utf-8"), source
    path = Path(source).expanduser()
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such dataset file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read: {exc}") from exc


def load_dataset(source: str, *, output_tokens: int, endpoint: str, seed: int | str = 0) -> DatasetPrompts:
    """Read every line of a JSONL dataset up front, so a bad line stops the run before any load."""
    text, name = _read(source)
    prompts = [
        _parse_line(line, f"{name}:{number}", output_tokens=output_tokens, endpoint=endpoint)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return DatasetPrompts(prompts, name=name, seed=seed)


@dataclass(frozen=True)
class TokenFit:
    """Prompt tokens as the server counts them: ``intercept + per_word * words``.

    The intercept is what the endpoint adds around the text (a chat template, a BOS token).
    """

    intercept: float
    per_word: float

    def words_for(self, tokens: int) -> int:
        """The number of words whose prompt comes closest to ``tokens`` tokens (at least one)."""
        return max(1, round((tokens - self.intercept) / self.per_word))


def fit_tokens(small: tuple[int, int], large: tuple[int, int]) -> TokenFit:
    """A line through two probes, each (words, prompt_tokens from the server's usage)."""
    (w1, t1), (w2, t2) = small, large
    if w2 <= w1 or t2 <= t1:
        raise EndpointError(
            f"cannot size synthetic prompts: {w1} words gave {t1} prompt tokens and {w2} words gave {t2}",
            hint="the server's usage.prompt_tokens does not grow with the prompt; use --dataset instead",
        )
    per_word = (t2 - t1) / (w2 - w1)
    return TokenFit(intercept=t1 - per_word * w1, per_word=per_word)
