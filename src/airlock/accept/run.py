"""One acceptance run: serve the spec, ask each (prompt, model) pair greedily, stop.

``record`` runs it here; ``check`` runs it inside the no-egress namespace (:mod:`airlock.accept.sandbox`),
which hands the request and the result over as JSON files.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from airlock.accept.client import ask
from airlock.accept.egress import EgressEvent
from airlock.accept.golden import Answer, Prompt, Sampling
from airlock.accept.served import served
from airlock.common.types import FrozenModel
from airlock.errors import AirlockError
from airlock.spec import Spec


class RunRequest(FrozenModel):
    spec: Spec  # as served: see served.accept_spec
    prompts: list[Prompt]
    pairs: list[tuple[str, str]]  # (prompt id, model name), in order
    sampling: Sampling
    workdir: Path
    startup_timeout_s: float = Field(gt=0)
    request_timeout_s: float = Field(300.0, gt=0)


class Reply(FrozenModel):
    prompt: str
    model: str
    answer: Answer | None = None
    error: str | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    completion_tokens: int = 0


class RunResult(FrozenModel):
    replies: list[Reply] = Field(default_factory=list)
    error: str | None = None  # the stack did not start, or the namespace could not be made
    egress_watched: bool = False
    egress: list[EgressEvent] = Field(default_factory=list)
    dns_lookups: int = 0


def run_prompts(request: RunRequest) -> list[Reply]:
    """Serve ``request.spec`` and ask every pair in turn; an answer's error is recorded, not raised."""
    import httpx

    prompts = {p.id: p for p in request.prompts}
    replies: list[Reply] = []
    with (
        served(request.spec, request.workdir, startup_timeout_s=request.startup_timeout_s) as url,
        httpx.Client(base_url=url, timeout=request.request_timeout_s, trust_env=False) as client,
    ):
        for prompt_id, model in request.pairs:
            try:
                timed = ask(client, model, prompts[prompt_id], request.sampling)
            except (AirlockError, httpx.HTTPError, ValueError) as exc:
                replies.append(Reply(prompt=prompt_id, model=model, error=str(exc) or type(exc).__name__))
                continue
            replies.append(
                Reply(
                    prompt=prompt_id, model=model, answer=timed.answer, ttft_s=timed.ttft_s,
                    tokens_per_s=timed.tokens_per_s, completion_tokens=timed.completion_tokens,
                )
            )  # fmt: skip
    return replies
