"""The gateway over real engines: llama-server with SmolLM2 and vLLM CPU with a tiny random Llama."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from airlock.engines.base import EngineConfig, free_port, internal_api_key
from airlock.engines.llamacpp import llamacpp_engine
from airlock.engines.supervisor import EngineState
from airlock.engines.vllm import vllm_engine
from airlock.gateway.apikeys import KeyStore
from airlock.gateway.auth import KeyCache
from airlock.serving.default_model import default_spec
from airlock.settings import Settings
from airlock.spec import GatewaySpec, LlamaCppEngineSpec, ModelSpec, VllmEngineSpec
from harness import GatewayThread


def _wait_restarted(gw: GatewayThread, name: str, timeout: float) -> None:
    runtime = gw.supervisor.engines[name]
    deadline = time.monotonic() + timeout
    while not (runtime.restarts >= 1 and runtime.state is EngineState.READY):
        assert time.monotonic() < deadline, f"{name} did not come back: {runtime.last_error}"
        time.sleep(0.2)


def _kill_and_expect_503(gw: GatewayThread, client: openai.OpenAI, name: str) -> None:
    runtime = gw.supervisor.engines[name]
    pid = runtime.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while runtime.state is EngineState.READY:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert info.value.status_code == 503
    assert info.value.response.headers["retry-after"].isdigit()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyStore, str]:
    store = KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")
    return store, store.create(
        "integration", scopes=["chat", "completions", "embeddings", "models", "metrics"]
    )[1]


# -- llama-server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_gw(
    llama_server: Path,
    settings: Settings,
    keys: tuple[KeyStore, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayThread]:
    model = default_spec(settings).models[0]
    engine = LlamaCppEngineSpec(kind="llamacpp", binary=llama_server, parallel=2, ctx_size=4096, threads=2)
    model = model.model_copy(update={"engine": engine})
    config = llamacpp_engine(model, engine, settings, port=free_port(), api_key=internal_api_key())
    with GatewayThread(
        [config],
        tmp_path_factory.mktemp("llama-logs"),
        keys=KeyCache(keys[0]),
        aliases={model.name: ["default"]},
    ) as gw:
        yield gw


@pytest.fixture
def llama(llama_gw: GatewayThread, keys: tuple[KeyStore, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=llama_gw.url + "/v1", api_key=keys[1], max_retries=0, timeout=60)


def test_llamacpp_chat_answers(llama: openai.OpenAI) -> None:
    reply = llama.chat.completions.create(
        model="default", temperature=0, max_tokens=32,
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    )  # fmt: skip
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    assert reply.model == "smollm2-135m-instruct"


def test_llamacpp_stream_and_completions(
    llama: openai.OpenAI, llama_gw: GatewayThread, keys: tuple[KeyStore, str]
) -> None:
    chunks = list(
        llama.chat.completions.create(
            model="default", temperature=0, max_tokens=16, stream=True,
            messages=[{"role": "user", "content": "Count from one to five."}],
        )
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) > 5
    assert all(c.choices for c in chunks), "the usage chunk the gateway requested must be removed"
    done = llama.completions.create(model="default", prompt="Once upon a time", max_tokens=8, temperature=0)
    assert done.choices[0].text
    metrics = httpx.get(llama_gw.url + "/metrics", headers={"Authorization": f"Bearer {keys[1]}"}).text
    assert 'airlock_completion_tokens_total{key="integration",model="smollm2-135m-instruct"}' in metrics
    assert 'airlock_time_to_first_token_seconds_count{model="smollm2-135m-instruct"} ' in metrics


def test_llamacpp_errors_and_auth(llama: openai.OpenAI, llama_gw: GatewayThread) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=llama_gw.url + "/v1", api_key="al-000000000000-x", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError):
        llama.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.UnprocessableEntityError):
        llama.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}], max_tokens=10**9
        )
    # An engine error passes through with the engine's message, in the OpenAI shape.
    with pytest.raises(openai.APIStatusError) as info:
        llama.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x " * 5000}], max_tokens=4
        )
    assert 400 <= info.value.status_code < 500
    assert isinstance(info.value.body, dict)
    assert info.value.body.get("message")
    # llama-server's own routes are not reachable through the gateway.
    for path in ("/slots", "/props", "/tokenize", "/completion"):
        assert httpx.post(llama_gw.url + path, json={}).status_code == 404


def test_llamacpp_killed_and_restarted(llama: openai.OpenAI, llama_gw: GatewayThread) -> None:
    _kill_and_expect_503(llama_gw, llama, "smollm2-135m-instruct")
    _wait_restarted(llama_gw, "smollm2-135m-instruct", timeout=60)
    assert llama.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    ).choices


# -- vLLM CPU -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_gw(
    vllm_python: Path,
    tiny_llama: Path,
    settings: Settings,
    keys: tuple[KeyStore, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayThread]:
    engine = VllmEngineSpec(
        kind="vllm", python=vllm_python, max_model_len=256, env={"VLLM_CPU_KVCACHE_SPACE": "1"}
    )
    model = ModelSpec(name="tiny-llama", aliases=["tiny"], path=tiny_llama, engine=engine)
    config: EngineConfig = vllm_engine(model, engine, settings, port=free_port(), api_key=internal_api_key())
    gateway = GatewaySpec(max_tokens_limit=4096)
    with GatewayThread(
        [config],
        tmp_path_factory.mktemp("vllm-logs"),
        gateway=gateway,
        keys=KeyCache(keys[0]),
        aliases={"tiny-llama": ["tiny"]},
    ) as gw:
        yield gw


@pytest.fixture
def vllm(vllm_gw: GatewayThread, keys: tuple[KeyStore, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=vllm_gw.url + "/v1", api_key=keys[1], max_retries=0, timeout=120)


def test_vllm_chat_completions_and_stream(vllm: openai.OpenAI) -> None:
    assert [m.id for m in vllm.models.list().data] == ["tiny-llama", "tiny"]
    reply = vllm.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=12,
        extra_body={"ignore_eos": True},
    )
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 12
    assert reply.model == "tiny-llama"
    done = vllm.completions.create(
        model="tiny", prompt="The quick", max_tokens=5, extra_body={"ignore_eos": True}
    )
    assert done.usage is not None
    assert done.usage.completion_tokens == 5
    chunks = list(
        vllm.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )
    )  # fmt: skip
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content is not None) >= 1


def test_vllm_errors_and_hidden_routes(
    vllm: openai.OpenAI, vllm_gw: GatewayThread, keys: tuple[KeyStore, str]
) -> None:
    with pytest.raises(openai.BadRequestError) as info:  # longer than max_model_len: vLLM's own 400
        vllm.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=1000
        )
    assert "256" in str(info.value)
    headers = {"Authorization": f"Bearer {keys[1]}"}
    for path in ("/tokenize", "/invocations", "/pause", "/v1/responses", "/detokenize", "/update_weights"):
        assert (
            httpx.post(vllm_gw.url + path, json={"model": "tiny", "prompt": "x"}, headers=headers).status_code
            == 404
        )
    assert httpx.get(vllm_gw.url + "/v1/models").status_code == 401


def test_vllm_killed_and_restarted(vllm: openai.OpenAI, vllm_gw: GatewayThread) -> None:
    _kill_and_expect_503(vllm_gw, vllm, "tiny-llama")
    _wait_restarted(vllm_gw, "tiny-llama", timeout=300)
    reply = vllm.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "x"}],
        max_tokens=3,
        extra_body={"ignore_eos": True},
    )
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 3
