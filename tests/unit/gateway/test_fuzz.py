"""The gateway fuzzed from its own /openapi.json (schemathesis, property-based): with and without a
valid key, no answer is a 5xx and no body shows a traceback or a path inside the machine.

The engine is the fake one (a real HTTP server in a child process), so what the gateway lets through
reaches an engine; llama-server's own answers to those bodies are checked in tests/integration. A
fixed seed and a bounded number of examples per route keep the run the same on every machine and
short (about 20 s on a 2-core runner for both key states).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis import Case, GenerationMode

from airlock.gateway.apikeys import KeyStore
from airlock.gateway.auth import KeyCache
from airlock.gateway.openapi import openapi_document
from airlock.spec import GatewaySpec
from harness import GatewayThread, fake_engine_config

SPEC = GatewaySpec(max_body_bytes=64 * 1024, max_tokens_limit=64, max_n=2)
SCHEMA = schemathesis.openapi.from_dict(openapi_document(SPEC))
# both what the description allows and what it does not (wrong types, missing fields), as an attacker sends
SCHEMA.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True)
#: what a body must never show: a traceback, a source file, a path of this machine
LEAKS = re.compile(r"Traceback|File \"|\.py\b|/usr/|/home/|/tmp/|/work/|site-packages|internal error")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayThread, str]]:
    store = KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")
    token = store.create("fuzzer")[1]
    spec = SPEC.model_copy(update={"audit_log": tmp_path_factory.mktemp("audit") / "audit.jsonl"})
    configs = [fake_engine_config("tiny")]
    with GatewayThread(
        configs, tmp_path_factory.mktemp("logs"), gateway=spec, keys=KeyCache(store)
    ) as thread:
        yield thread, token


@pytest.mark.parametrize("keyed", [True, False], ids=["valid-key", "no-key"])
@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=25,
    derandomize=True,  # the same examples on every run
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_no_5xx_and_no_leak(case: Case[Any], gw: tuple[GatewayThread, str], keyed: bool) -> None:
    thread, token = gw
    if case.body is not None and isinstance(case.body, dict) and keyed and "model" in case.body:
        case.body["model"] = "tiny"  # reach the engine too, not only the router's 404
    headers = {"Authorization": f"Bearer {token}"} if keyed else {}
    response = case.call(base_url=thread.url, headers=headers, timeout=30)
    body = response.text
    assert response.status_code < 500, f"{response.status_code} {body[:500]}\n{case.as_curl_command()}"
    assert not LEAKS.search(body), f"{body[:500]}\n{case.as_curl_command()}"
