"""Check request bodies before they reach an engine: types, required fields and sane bounds.

Malformed JSON or a body that is not an object is a 400; a well-formed body that breaks the schema
(wrong type, missing field, out of range, max_tokens or n beyond the gateway's caps) is a 422, both
with the OpenAI error shape and the offending field in ``param``. Unknown fields pass through
untouched: engines add their own (vLLM's ``guided_json``, llama.cpp's ``cache_prompt``...).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airlock.gateway.errors import APIError


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # "yes" is not a bool, "5" is not an int


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatMessage(_Open):
    role: str = Field(min_length=1)
    content: str | list[Any] | None = None


class _Generation(_Open):
    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)


class EmbeddingRequest(_Open):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, ge=1)


KIND = Literal["chat", "completions", "embeddings"]
_SCHEMAS: dict[str, type[_Open]] = {
    "chat": ChatCompletionRequest,
    "completions": CompletionRequest,
    "embeddings": EmbeddingRequest,
}


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise APIError(400, "the request body is empty; send a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, not {type(data).__name__}")
    return data


def validate_request(kind: str, data: dict[str, Any], *, max_tokens_limit: int, max_n: int) -> _Open:
    """Validate ``data`` against the schema of ``kind``; raise APIError(422) naming the field."""
    try:
        request = _SCHEMAS[kind].model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise APIError(
            422, f"{where}: {first['msg']}" if where else first["msg"], param=where or None
        ) from exc
    if isinstance(request, _Generation):
        for field in ("max_tokens", "max_completion_tokens"):
            value = getattr(request, field, None)
            if value is not None and value > max_tokens_limit:
                raise APIError(
                    422, f"{field}: {value} is above this gateway's limit of {max_tokens_limit}", param=field
                )
        if request.n > max_n:
            raise APIError(422, f"n: {request.n} is above this gateway's limit of {max_n}", param="n")
    return request
