"""Check request bodies before they reach an engine: types, required fields and sane bounds.

Malformed JSON or a body that is not an object is a 400; a well-formed body that breaks the schema
(wrong type, missing field, out of range, max_tokens or n beyond the gateway's caps) is a 422, both
with the OpenAI error shape and the offending field in ``param``. Unknown fields pass through
untouched: engines add their own (vLLM's ``guided_json``, llama.cpp's ``cache_prompt``...).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from airlock.gateway.errors import APIError

if TYPE_CHECKING:
    from airlock.engines.base import EngineConfig

#: JSON integers an engine parses without overflow (llama-server reads them as int64, vLLM as Python ints).
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # "yes" is not a bool, "5" is not an int


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Open):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class FunctionDef(_Open):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Open):
    type: Literal["function"]
    function: FunctionDef


class _FunctionName(_Open):
    name: Name


class ToolChoice(_Open):
    type: Literal["function"]
    function: _FunctionName


class _ToolCallFunction(_Open):
    name: Name
    arguments: str


class ToolCall(_Open):
    id: str | None = None
    type: Literal["function"] = "function"
    function: _ToolCallFunction


class _ImageUrl(_Open):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(_Open):
    type: Literal["text", "image_url", "input_audio", "file", "refusal"]
    text: str | None = None
    image_url: _ImageUrl | None = None
    input_audio: dict[str, Any] | None = None
    file: dict[str, Any] | None = None
    refusal: str | None = None


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class _JsonSchemaFormat(_Open):
    name: Name | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchemaFormat | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # llama-server's short form


class _Generation(_Open):
    """What chat and completions share: OpenAI's fields and the sampling fields llama-server and vLLM
    read. Fields no engine reads pass through untouched (engines ignore them); every field an engine
    parses is typed here, so a wrong type is a 422 naming it, never an engine's 500."""

    model: Name
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: Int64 | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    logit_bias: dict[str, float] | None = None
    # llama-server's and vLLM's own sampling fields
    top_k: int | None = Field(None, ge=-1, le=1_000_000)
    min_p: float | None = Field(None, ge=0, le=1)
    typical_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0, le=10)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    repeat_last_n: int | None = Field(None, ge=-1, le=1_000_000)
    mirostat: Literal[0, 1, 2] | None = None
    mirostat_tau: float | None = Field(None, ge=0, le=100)
    mirostat_eta: float | None = Field(None, ge=0, le=1)
    n_probs: int | None = Field(None, ge=0, le=20)
    min_keep: int | None = Field(None, ge=0, le=1000)
    n_keep: int | None = Field(None, ge=-1, le=1_000_000)
    min_tokens: int | None = Field(None, ge=0)
    ignore_eos: bool | None = None
    cache_prompt: bool | None = None
    skip_special_tokens: bool | None = None
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    samplers: list[str] | str | None = None
    response_format: ResponseFormat | None = None
    id_slot: int | None = Field(None, ge=-1, le=4096)
    timings_per_token: bool | None = None
    return_tokens: bool | None = None
    post_sampling_probs: bool | None = None


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDef] | None = None
    function_call: Literal["none", "auto"] | _FunctionName | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    modalities: list[str] | None = None


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[Int64] | list[list[Int64]]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)


class EmbeddingRequest(_Open):
    model: Name
    input: str | list[str] | list[Int64] | list[list[Int64]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, ge=1, le=1_000_000)
    user: str | None = None


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
            value = getattr(request, field)
            if value is not None and value > max_tokens_limit:
                raise APIError(
                    422, f"{field}: {value} is above this gateway's limit of {max_tokens_limit}", param=field
                )
        if request.n > max_n:
            raise APIError(422, f"n: {request.n} is above this gateway's limit of {max_n}", param="n")
    return request


def serves_embeddings(config: EngineConfig) -> bool | None:
    """Whether an engine serves /v1/embeddings (True: only those), read from its command line;
    None when airlock cannot tell (a remote engine), and the engine answers for itself."""
    if config.launch is None:
        return None
    argv = config.launch.argv
    if config.kind == "llamacpp":
        return "--embeddings" in argv or "--embedding" in argv
    if config.kind == "vllm":
        pairs = {(a, b) for a, b in itertools.pairwise(argv)}
        flags = set(argv)
        return bool(
            pairs & {("--task", "embed"), ("--task", "embedding"), ("--runner", "pooling")}
            or flags & {"--task=embed", "--task=embedding", "--runner=pooling"}
        )
    return None


def check_model_kind(kind: str, model: str, config: EngineConfig) -> None:
    """400 naming the model when the route does not fit it: embeddings from a model that does not
    serve them (llama-server started without --embeddings answers 501 with advice the user cannot
    follow), or chat and completions from an embedding model."""
    serves = serves_embeddings(config)
    if serves is None:
        return
    if kind == "embeddings" and not serves:
        raise APIError(
            400,
            f"The model '{model}' does not serve embeddings; use an embedding model "
            "(the operator sets one up with engine.embeddings: true in airlock.yaml).",
            param="model",
            code="model_not_supported",
        )
    if kind != "embeddings" and serves:
        raise APIError(
            400,
            f"The model '{model}' is an embedding model: it serves /v1/embeddings only.",
            param="model",
            code="model_not_supported",
        )
