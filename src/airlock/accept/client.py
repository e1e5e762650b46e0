"""One greedy, streamed chat completion through the gateway: the text, the engine's tokens and
log-probabilities where it gives them, time to first token and tokens per second."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from airlock.accept.golden import Answer, Prompt, Sampling
from airlock.errors import EngineError


@dataclass(frozen=True)
class Timed:
    answer: Answer
    ttft_s: float | None  # None: no token came back
    tokens_per_s: float | None  # after the first token; None for fewer than 2 tokens
    completion_tokens: int


def _chunks(response: httpx.Response) -> Any:
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


def ask(
    client: httpx.Client,
    model: str,
    prompt: Prompt,
    sampling: Sampling,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> Timed:
    """Ask ``model`` ``prompt`` greedily and time it; an HTTP error is an :class:`EngineError`."""
    body = {
        "model": model,
        "messages": [m.model_dump() for m in prompt.messages],
        "temperature": sampling.temperature,
        "seed": sampling.seed,
        "max_tokens": prompt.max_tokens or sampling.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": True,
    }
    text: list[str] = []
    tokens: list[str] = []
    logprobs: list[float] = []
    have_logprobs = True
    finish: str | None = None
    usage_tokens: int | None = None
    start = clock()
    first: float | None = None
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise EngineError(
                f"{model}: prompt {prompt.id!r}: HTTP {response.status_code}: {response.text[:300]}"
            )
        for chunk in _chunks(response):
            if chunk.get("usage"):
                usage_tokens = chunk["usage"].get("completion_tokens")
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece and first is None:
                    first = clock()
                text.append(piece)
                finish = choice.get("finish_reason") or finish
                content = (choice.get("logprobs") or {}).get("content")
                if content:
                    tokens += [str(t.get("token", "")) for t in content]
                    logprobs += [float(t.get("logprob", 0.0)) for t in content]
                elif piece:
                    have_logprobs = False
    end = clock()
    count = usage_tokens if usage_tokens is not None else len(tokens)
    rate = (count - 1) / (end - first) if first is not None and count > 1 and end > first else None
    answer = Answer(
        prompt=prompt.id, model=model, text="".join(text),
        tokens=tokens if have_logprobs and tokens else None,
        logprobs=logprobs if have_logprobs and tokens else None, finish_reason=finish,
    )  # fmt: skip
    return Timed(
        answer=answer, ttft_s=None if first is None else first - start, tokens_per_s=rate,
        completion_tokens=count,
    )  # fmt: skip
