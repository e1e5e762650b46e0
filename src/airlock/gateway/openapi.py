"""``GET /openapi.json``: an OpenAPI 3.1 description of the gateway's routes, for clients and fuzzers.

The request bodies are generated from the pydantic models that validate them
(:mod:`airlock.gateway.validation`), so the description cannot drift from what the gateway accepts;
the gateway's own caps (``max_tokens_limit``, ``max_n``, ``max_body_bytes``) are written into it.
The routes, their responses and the error shape are written out here: they are few, and a framework
that generates them would sit in every request's path (see ``asgi.py``).
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from airlock import __version__
from airlock.gateway.validation import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from airlock.spec import GatewaySpec

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "examples": ["invalid_request_error", "authentication_error"]},
                "param": {"type": ["string", "null"], "description": "the field at fault"},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

#: status -> when the gateway answers it
_ERRORS = {
    "400": "the body is not a JSON object, or the model does not serve this route",
    "401": "no API key, or an invalid or revoked one",
    "403": "the key may not use this route",
    "404": "no such model, or the key may not use it",
    "408": "the request's header did not arrive within gateway.header_timeout_s (then the connection closes)",
    "413": "the body is larger than gateway.max_body_bytes",
    "422": "a field breaks the schema (param names it) or a gateway limit",
    "429": "a limit of the key or of the engine is reached (Retry-After)",
    "431": "the request line and headers are larger than gateway.max_header_bytes (then it closes)",
    "502": "the engine broke off its answer",
    "503": "the model is not ready, or the audit log cannot be written (Retry-After)",
    "504": "the engine did not answer in time",
}


def _error_responses(*codes: str) -> dict[str, Any]:
    return {
        code: {
            "description": _ERRORS[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in codes
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _cap(schema: dict[str, Any], field: str, maximum: int) -> None:
    prop = schema.get("properties", {}).get(field)
    if prop is None:
        return
    for option in prop.get("anyOf", [prop]):
        if option.get("type") == "integer":
            option["maximum"] = maximum


@functools.cache
def _schemas(max_tokens: int, max_n: int) -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "validation") for m in (ChatCompletionRequest, CompletionRequest, EmbeddingRequest)],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = defs["$defs"]
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        for field in ("max_tokens", "max_completion_tokens"):
            _cap(schemas[name], field, max_tokens)
        _cap(schemas[name], "n", max_n)
    schemas["Error"] = _ERROR
    schemas["Model"] = {
        "type": "object",
        "required": ["id", "object"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            "root": {"type": "string", "description": "the served model's own name (for an alias too)"},
        },
    }
    return schemas


def openapi_document(spec: GatewaySpec) -> dict[str, Any]:
    """The description of this gateway, with its limits."""
    keyed: list[dict[str, list[str]]] = [{"bearer": []}] if spec.auth else []
    metrics_security = keyed if spec.metrics_auth else []
    auth_errors = ("401",) if spec.auth else ()

    def generation(name: str, summary: str, streams: bool) -> dict[str, Any]:
        content: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
        if streams:
            content["text/event-stream"] = {"schema": {"type": "string"}}
        return {
            "post": {
                "summary": summary,
                "security": keyed,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
                },
                "responses": {
                    "200": {
                        "description": "the engine's answer (server-sent events when stream is true)",
                        "content": content,
                    },
                    **_error_responses(
                        "400", *auth_errors, "404", "408", "413", "422", "429", "431", "502", "503", "504"
                    ),
                },
            }
        }

    def plain(summary: str, schema: dict[str, Any], security: list[Any], *errors: str) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "security": security,
                "responses": {"200": _json(schema), **_error_responses(*errors)},
            }
        }

    models_list = {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "airlock gateway",
            "version": __version__,
            "description": "OpenAI-compatible API in front of airlock's engines. Errors have OpenAI's "
            f"shape. Bodies up to {int(spec.max_body_bytes)} bytes, request headers up to "
            f"{int(spec.max_header_bytes)}; max_tokens up to "
            f"{spec.max_tokens_limit}; n up to {spec.max_n}.",
        },
        "paths": {
            "/health": plain("liveness", {"type": "object"}, []),
            "/ready": {
                "get": {
                    "summary": "200 when every engine is ready (and the audit log writable), else 503",
                    "security": [],
                    "responses": {
                        "200": _json({"type": "object"}),
                        "503": _json({"type": "object"}, "an engine is not ready, or the audit log is down"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": metrics_security,
                    "responses": {
                        "200": {
                            "description": "Prometheus text",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_error_responses(*(auth_errors if spec.metrics_auth else ()), "403"),
                    },
                }
            },
            "/version": plain("airlock's and the engines' versions", {"type": "object"}, keyed, *auth_errors),
            "/openapi.json": plain("this description", {"type": "object"}, []),
            "/v1/models": plain("the models this key may use", models_list, keyed, *auth_errors),
            "/v1/models/{model}": {
                "get": {
                    "summary": "one model",
                    "security": keyed,
                    "parameters": [
                        {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Model"}),
                        **_error_responses(*auth_errors, "404", "503"),
                    },
                }
            },
            "/v1/chat/completions": generation("ChatCompletionRequest", "chat completion", True),
            "/v1/completions": generation("CompletionRequest", "text completion", True),
            "/v1/embeddings": generation("EmbeddingRequest", "embeddings", False),
        },
        "components": {
            "schemas": _schemas(spec.max_tokens_limit, spec.max_n),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
