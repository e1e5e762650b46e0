from __future__ import annotations

import pytest

from airlock.engines.base import EngineConfig, Launch
from airlock.gateway.errors import APIError
from airlock.gateway.validation import (
    check_model_kind,
    parse_json_object,
    serves_embeddings,
    validate_request,
)

LIMITS = {"max_tokens_limit": 100, "max_n": 2}
MSG = [{"role": "user", "content": "x"}]


def test_unknown_fields_pass_through() -> None:
    req = validate_request(
        "chat", {"model": "m", "messages": MSG, "vendor_knob": {"a": 1}, "top_k": 5}, **LIMITS
    )
    assert req.model_extra == {"vendor_knob": {"a": 1}}


def test_multimodal_content_lists_are_allowed() -> None:
    content = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    validate_request("chat", {"model": "m", "messages": [{"role": "user", "content": content}]}, **LIMITS)


@pytest.mark.parametrize(
    ("kind", "body", "param"),
    [
        ("chat", {"model": "m", "messages": MSG, "max_completion_tokens": 101}, "max_completion_tokens"),
        ("chat", {"model": "m", "messages": MSG, "n": 3}, "n"),
        ("chat", {"model": "m", "messages": MSG, "top_p": 1.5}, "top_p"),
        ("chat", {"model": "m", "messages": MSG, "stop": 5}, "stop"),
        ("completions", {"model": "m"}, "prompt"),
        ("completions", {"model": "m", "prompt": "x", "logprobs": 50}, "logprobs"),
        ("embeddings", {"model": "m"}, "input"),
        ("embeddings", {"model": "m", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ],
)
def test_schema_errors_are_422_naming_the_field(kind: str, body: dict[str, object], param: str) -> None:
    with pytest.raises(APIError) as info:
        validate_request(kind, body, **LIMITS)
    assert info.value.status == 422
    assert info.value.param is not None
    assert info.value.param.startswith(param)


def test_token_arrays_are_valid_prompts() -> None:
    validate_request("completions", {"model": "m", "prompt": [1, 2, 3]}, **LIMITS)
    validate_request("embeddings", {"model": "m", "input": [[1, 2], [3]]}, **LIMITS)


@pytest.mark.parametrize(
    ("raw", "fragment"), [(b"", "empty"), (b"{", "not valid JSON"), (b"null", "NoneType"), (b'"s"', "str")]
)
def test_bodies_that_are_not_objects(raw: bytes, fragment: str) -> None:
    with pytest.raises(APIError) as info:
        parse_json_object(raw)
    assert info.value.status == 400
    assert fragment in info.value.message


# -- what fuzzing found: every field an engine reads is typed, so a wrong one is a 422, never a 500 --


@pytest.mark.parametrize(
    ("kind", "extra", "param"),
    [
        ("completions", {"max_completion_tokens": [1]}, "max_completion_tokens"),  # was a TypeError: 500
        ("completions", {"max_completion_tokens": 5000}, "max_completion_tokens"),
        ("chat", {"tools": "x"}, "tools"),  # llama-server answered 500
        ("chat", {"tools": [{"type": "function"}]}, "tools.0.function"),
        ("chat", {"tools": [{"type": "function", "function": {"name": 5}}]}, "tools.0.function.name"),
        ("chat", {"tools": [{"type": "code", "function": {"name": "f"}}]}, "tools.0.type"),
        ("chat", {"tool_choice": "sometimes"}, "tool_choice"),
        ("chat", {"response_format": {"type": "yaml"}}, "response_format.type"),
        ("chat", {"response_format": "json"}, "response_format"),
        ("chat", {"logit_bias": {"1": "a"}}, "logit_bias.1"),
        ("chat", {"top_k": "5"}, "top_k"),
        ("chat", {"seed": 2**64}, "seed"),
        ("chat", {"grammar": 5}, "grammar"),
        ("chat", {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        (
            "chat",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "messages.0.content",
        ),
        ("embeddings", {"dimensions": "3"}, "dimensions"),
    ],
)
def test_fields_an_engine_reads_are_typed(kind: str, extra: dict[str, object], param: str) -> None:
    base: dict[str, object] = {"model": "m", "messages": MSG} if kind == "chat" else {"model": "m"}
    if kind == "completions":
        base["prompt"] = "x"
    if kind == "embeddings":
        base["input"] = "x"
    with pytest.raises(APIError) as info:
        validate_request(kind, {**base, **extra}, max_tokens_limit=1000, max_n=2)
    assert info.value.status == 422
    assert info.value.param is not None and info.value.param.startswith(param), info.value.message


def test_well_formed_tools_pass() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    validate_request("chat", {"model": "m", "messages": MSG, "tools": tools, "tool_choice": "auto"}, **LIMITS)


def _config(kind: str, *argv: str) -> EngineConfig:
    return EngineConfig("m", kind, "http://127.0.0.1:1", "m", Launch(("engine", *argv), {}))


def test_embeddings_from_a_model_that_does_not_serve_them_is_a_400_naming_it() -> None:
    with pytest.raises(APIError) as info:
        check_model_kind("embeddings", "smollm2", _config("llamacpp", "--model", "x.gguf"))
    assert info.value.status == 400
    assert "'smollm2' does not serve embeddings" in info.value.message
    assert "--embeddings" not in info.value.message  # nothing the user could pass
    check_model_kind("embeddings", "bge", _config("llamacpp", "--embeddings"))
    with pytest.raises(APIError, match="'bge' is an embedding model"):
        check_model_kind("chat", "bge", _config("llamacpp", "--embeddings"))
    check_model_kind("embeddings", "e5", _config("vllm", "--task", "embed"))
    with pytest.raises(APIError):
        check_model_kind("embeddings", "qwen", _config("vllm", "--max-model-len", "4096"))
    remote = EngineConfig("r", "remote", "http://10.0.0.5:8000", "r", None)
    assert serves_embeddings(remote) is None  # the remote engine answers for itself
    check_model_kind("embeddings", "r", remote)
