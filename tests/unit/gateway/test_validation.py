from __future__ import annotations

import pytest

from airlock.gateway.errors import APIError
from airlock.gateway.validation import parse_json_object, validate_request

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
