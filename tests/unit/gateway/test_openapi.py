"""GET /openapi.json: a valid OpenAPI 3.1 document that describes every route the gateway serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from airlock.gateway.app import create_app
from airlock.gateway.openapi import openapi_document
from airlock.gateway.routing import Router
from airlock.spec import GatewaySpec
from harness import GatewayThread, fake_engine_config


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    spec = GatewaySpec(max_tokens_limit=1000, max_n=4)
    with GatewayThread([fake_engine_config("tiny")], tmp_path_factory.mktemp("logs"), gateway=spec) as thread:
        yield thread


def test_the_served_document_is_valid_openapi_3_1(gw: GatewayThread) -> None:
    r = httpx.get(gw.url + "/openapi.json")  # no key: clients and fuzzers read it first
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    validate(doc, cls=OpenAPIV31SpecValidator)  # raises on the first fault
    doc["paths"]["/health"]["get"]["responses"] = {"200": {"content": 5}}
    with pytest.raises(OpenAPIValidationError):  # the validator does look
        validate(doc, cls=OpenAPIV31SpecValidator)


def test_every_route_is_described_and_nothing_else() -> None:
    app = create_app(GatewaySpec(), Router([]), None)
    served = {(method.lower(), path) for method, path in app._routes}
    served.add(("get", "/v1/models/{model}"))
    doc = openapi_document(GatewaySpec())
    described = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert described == served


def test_the_gateways_limits_and_auth_are_in_it() -> None:
    doc = openapi_document(GatewaySpec(max_tokens_limit=77, max_n=3, auth=True, metrics_auth=False))
    chat = doc["components"]["schemas"]["ChatCompletionRequest"]
    maxima = [o.get("maximum") for o in chat["properties"]["max_tokens"]["anyOf"]]
    assert 77 in maxima
    assert 3 in [o.get("maximum") for o in chat["properties"]["n"].get("anyOf", [chat["properties"]["n"]])]
    assert doc["paths"]["/v1/chat/completions"]["post"]["security"] == [{"bearer": []}]
    assert doc["paths"]["/metrics"]["get"]["security"] == []
    assert "422" in doc["paths"]["/v1/completions"]["post"]["responses"]
    error = doc["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["message", "type"]
    no_auth = openapi_document(GatewaySpec(auth=False))
    assert no_auth["paths"]["/v1/models"]["get"]["security"] == []
    assert "401" not in no_auth["paths"]["/v1/models"]["get"]["responses"]


def test_the_request_schemas_are_the_validation_models(tmp_path: Path) -> None:
    # tools is typed in the description because the gateway checks it: a fuzzer finds no gap
    chat = openapi_document(GatewaySpec())["components"]["schemas"]["ChatCompletionRequest"]
    assert "tools" in chat["properties"] and "max_completion_tokens" in chat["properties"]
    assert set(chat["required"]) == {"model", "messages"}
