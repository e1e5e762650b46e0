"""The golden file: prompts and the answers a model gave on staging, with what produced them.

``airlock accept record`` writes it; ``pack`` carries it as a plain file (the spec's ``files:``, at
``accept/golden.json`` in the store by default); ``airlock accept check`` replays its prompts.

The prompts file (``--prompts``) is JSONL, one prompt a line::

    {"id": "capital", "messages": [{"role": "user", "content": "Capital of France?"}]}
    {"id": "story", "prompt": "Once upon a time", "model": "smollm2-135m-instruct", "max_tokens": 24}

``prompt`` is a user message; ``model`` limits the prompt to one model (default: every model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from airlock.common.types import FrozenModel
from airlock.errors import ConfigError

#: Where ``accept check`` looks for the golden file in a store, unless ``--golden`` names one; carry it
#: there with the spec's ``files: [{path: golden.json, dest: accept/golden.json}]``.
STORE_GOLDEN = "accept/golden.json"
MAX_PROMPTS = 10_000
MAX_GOLDEN_BYTES = 64 * 1024 * 1024  # 10,000 prompts with long answers for a few models fit easily


class Message(FrozenModel):
    role: Literal["system", "user", "assistant"]
    content: str


class Prompt(FrozenModel):
    id: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1)
    model: str | None = None  # None: every model of the spec
    max_tokens: int | None = Field(None, ge=1, le=4096)

    @model_validator(mode="before")
    @classmethod
    def _from_prompt(cls, data: object) -> object:
        if isinstance(data, dict) and "prompt" in data:
            data = dict(data)
            text = data.pop("prompt")
            if "messages" in data:
                raise ValueError("give 'prompt' or 'messages', not both")
            data["messages"] = [{"role": "user", "content": text}]
        return data


class Sampling(FrozenModel):
    """Greedy decoding: what every answer of a golden file was produced with."""

    temperature: float = 0.0
    seed: int = 1234
    max_tokens: int = Field(64, ge=1, le=4096)


class ModelRecord(FrozenModel):
    """What answered: the weights (digest over their files), the engine and its version, the host."""

    name: str
    digest: str  # sha256:... over the sorted "path sha256" lines of the model's files (as the audit names it)
    engine: str  # llamacpp | vllm | remote
    engine_version: str
    hardware: str  # CPU model and GPUs, e.g. "AMD EPYC 7B13; GPUs: none"


class Answer(FrozenModel):
    prompt: str  # the prompt's id
    model: str
    text: str
    tokens: list[str] | None = None  # the engine's tokens, where it gives logprobs
    logprobs: list[float] | None = None
    finish_reason: str | None = None


class GoldenFile(FrozenModel):
    version: Literal[1] = 1
    created: str
    airlock_version: str
    sampling: Sampling
    models: list[ModelRecord]
    prompts: list[Prompt]
    answers: list[Answer]

    @model_validator(mode="after")
    def _answers_name_prompts(self) -> GoldenFile:
        ids = {p.id for p in self.prompts}
        unknown = sorted({a.prompt for a in self.answers} - ids)
        if unknown:
            raise ValueError(f"answers to prompts the file does not hold: {', '.join(unknown[:5])}")
        return self

    def model(self, name: str) -> ModelRecord | None:
        return next((m for m in self.models if m.name == name), None)

    def answer(self, prompt: str, model: str) -> Answer | None:
        return next((a for a in self.answers if a.prompt == prompt and a.model == model), None)


def read_prompts(path: Path) -> list[Prompt]:
    """The prompts of a JSONL file; a bad line is an error naming file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the prompts: {exc}") from exc
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if isinstance(data, dict) and "id" not in data:
                data = {**data, "id": f"line-{number}"}
            prompt = Prompt.model_validate(data)
        except (ValueError, ValidationError) as exc:
            why = problems(exc) if isinstance(exc, ValidationError) else str(exc)
            raise ConfigError(
                f"{path}:{number}: not a prompt ({why})",
                hint='each line: {"id": "...", "prompt": "..."} or {"id": "...", "messages": [...]}',
            ) from exc
        if prompt.id in seen:
            raise ConfigError(f"{path}:{number}: the prompt id {prompt.id!r} is used twice")
        seen.add(prompt.id)
        prompts.append(prompt)
    if not prompts:
        raise ConfigError(f"{path}: no prompts")
    if len(prompts) > MAX_PROMPTS:
        raise ConfigError(f"{path}: {len(prompts)} prompts; at most {MAX_PROMPTS}")
    return prompts


def problems(exc: ValidationError, most: int = 3) -> str:
    """A validation error in one short line: ``where: what`` for the first few problems."""
    found = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}" for e in found[:most]]
    more = f" (and {len(found) - most} more)" if len(found) > most else ""
    return "; ".join(parts) + more


def read_golden(path: Path) -> GoldenFile:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_GOLDEN_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the golden file: {exc.strerror}",
            hint="record one with `airlock accept record`, or give --golden",
        ) from exc
    if len(data) > MAX_GOLDEN_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_GOLDEN_BYTES // 2**20} MiB: not a golden file")
    try:
        return GoldenFile.model_validate_json(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: not an airlock golden file ({problems(exc)})") from exc
