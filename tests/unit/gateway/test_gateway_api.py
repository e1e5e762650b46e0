"""The gateway against the fake engine (a real HTTP server in a child process), through the openai SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from airlock.gateway.apikeys import KeyStore
from airlock.gateway.auth import KeyCache
from airlock.spec import GatewaySpec
from airlock.testing.fake_engine import REPLY
from harness import GatewayThread, fake_engine_config


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")


@pytest.fixture(scope="module")
def token(store: KeyStore) -> str:
    return store.create("tester", scopes=["chat", "completions", "embeddings", "models", "metrics"])[1]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, store: KeyStore, token: str) -> Iterator[GatewayThread]:
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    gateway = GatewaySpec(max_body_bytes=64 * 1024, max_tokens_limit=1000, max_n=4, audit_log=audit)
    configs = [fake_engine_config("tiny", token_delay=0.002), fake_engine_config("other")]
    thread = GatewayThread(
        configs, tmp_path_factory.mktemp("logs"), gateway=gateway, keys=KeyCache(store, refresh_s=0.1),
        aliases={"tiny": ["small"]},
    )  # fmt: skip
    with thread:
        yield thread


@pytest.fixture
def client(gw: GatewayThread, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0)


def _raw(gw: GatewayThread, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=gw.url, headers=headers, timeout=10)


def words(n: int) -> str:
    return " ".join(REPLY.split()[:n])


def test_models_lists_names_and_aliases(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny", "small", "other"]
    assert client.models.retrieve("small").id == "small"


def test_model_objects_name_their_root_so_an_alias_is_not_another_model(
    gw: GatewayThread, token: str
) -> None:
    # As vLLM's model objects: `root` is the served model's own name, also on an alias's entry, so a
    # client (bench) counts distinct models by root, not by entry.
    with _raw(gw, token) as http:
        listed = http.get("/v1/models").json()["data"]
        one = http.get("/v1/models/small").json()
    assert [(m["id"], m["root"]) for m in listed] == [("tiny", "tiny"), ("small", "tiny"), ("other", "other")]
    assert one["id"] == "small" and one["root"] == "tiny" and one["object"] == "model"


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi there"}], max_tokens=5
    )
    assert reply.choices[0].message.content == words(5)
    assert reply.usage is not None and reply.usage.completion_tokens == 5 and reply.usage.prompt_tokens == 2


def test_alias_routes_to_the_same_engine(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="small", messages=[{"role": "user", "content": "x"}], max_tokens=3
    )
    assert reply.choices[0].message.content == words(3)


def test_chat_stream_passes_through_and_hides_the_usage_chunk_it_added(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == words(6)
    assert all(c.choices for c in chunks), (
        "the usage-only chunk the gateway asked for must not reach the client"
    )


def test_chat_stream_keeps_usage_when_the_client_asks(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "a b c"}], max_tokens=4, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_completions_plain_and_streamed(client: openai.OpenAI) -> None:
    plain = client.completions.create(model="tiny", prompt="once upon", max_tokens=3)
    assert plain.choices[0].text == words(3)
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="tiny", prompt="x", max_tokens=7, stream=True)
        if c.choices
    )
    assert streamed == words(7)


def test_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="tiny", input=["abc", "de"])
    assert [d.embedding[0] for d in result.data] == [3.0, 2.0]


def test_unknown_model_is_a_404_openai_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 404
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert "nope" in info.value.body["message"]  # type: ignore[index]


def test_missing_and_wrong_keys_are_401(gw: GatewayThread) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "x"}]}
    for headers in (
        {},
        {"Authorization": "Bearer al-000000000000-nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
    ):
        r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(gw.url + "/v1/models").status_code == 401


def test_sdk_auth_error(gw: GatewayThread) -> None:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="al-123456789abc-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_revoked_key_is_refused_within_a_second(gw: GatewayThread, store: KeyStore) -> None:
    _, temp = store.create("temporary")
    with _raw(gw, temp) as http:
        deadline = time.monotonic() + 3
        while http.get("/v1/models").status_code != 200:  # the cache reloads every 0.1 s here
            assert time.monotonic() < deadline
            time.sleep(0.05)
        store.revoke("temporary")
        deadline = time.monotonic() + 3
        while http.get("/v1/models").status_code != 401:
            assert time.monotonic() < deadline, "a revoked key still works"
            time.sleep(0.05)


def test_key_limited_to_some_models(gw: GatewayThread, store: KeyStore) -> None:
    _, limited = store.create("only-other", models=["other"])
    time.sleep(0.2)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=limited, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["other"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="small", messages=[{"role": "user", "content": "x"}])
    assert client.chat.completions.create(
        model="other", messages=[{"role": "user", "content": "x"}], max_tokens=1
    ).choices


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 422, "model"),
        (b'{"model": "tiny"}', 422, "messages"),
        (b'{"model": "tiny", "messages": []}', 422, "messages"),
        (b'{"model": "tiny", "messages": "hello"}', 422, "messages"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', 422, "model"),
        (b'{"model": "tiny", "messages": [{"content": "x"}]}', 422, "role"),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}',
            422,
            "max_tokens",
        ),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1000000}',
            422,
            "limit of 1000",
        ),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
            422,
            "max_tokens",
        ),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 99}', 422, "limit of 4"),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 7}',
            422,
            "temperature",
        ),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            422,
            "stream",
        ),
    ],
)
def test_bad_bodies_get_clear_openai_errors(
    gw: GatewayThread, token: str, body: bytes, status: int, fragment: str
) -> None:
    with _raw(gw, token) as http:
        r = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert fragment in error["message"]
    assert error["type"] == "invalid_request_error"
    assert "Traceback" not in r.text


def test_oversized_body_is_413_declared_or_streamed(gw: GatewayThread, token: str) -> None:
    big = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"x" * 100_000 + b'"}]}'
    with _raw(gw, token) as http:
        assert http.post("/v1/chat/completions", content=big).status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: the gateway must count as it reads
            for i in range(0, len(big), 8192):
                yield big[i : i + 8192]

        r = http.post("/v1/chat/completions", content=chunks())
        assert r.status_code == 413
        assert "limit of 65536 bytes" in r.json()["error"]["message"]


def test_engine_errors_pass_through_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "please fail 400"}]
        )
    assert "engine says no" in str(info.value)
    with pytest.raises(openai.InternalServerError) as info500:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "please fail 500"}]
        )
    assert info500.value.body["message"] == "engine exploded"  # type: ignore[index]


def test_only_the_gateways_routes_are_exposed(gw: GatewayThread, token: str) -> None:
    with _raw(gw, token) as http:
        for path in (
            "/tokenize",
            "/invocations",
            "/v1/responses",
            "/pause",
            "/stats",
            "/v1/tokenize",
            "/docs",
        ):
            r = http.post(path, json={"model": "tiny"})
            assert r.status_code == 404, path
            assert r.json()["error"]["code"] == "not_found"
        assert http.get("/v1/chat/completions").status_code == 405
        assert http.delete("/v1/models/tiny").status_code == 405


def test_health_ready_version_metrics(gw: GatewayThread, token: str, client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "one two three"}], max_tokens=2
    )
    list(
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2, stream=True
        )
    )
    assert httpx.get(gw.url + "/v1/models").status_code == 401  # counted below (no test order relied on)
    assert httpx.get(gw.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(gw.url + "/ready")
    assert ready.status_code == 200 and ready.json()["engines"]["tiny"]["state"] == "ready"
    assert httpx.get(gw.url + "/metrics").status_code == 401
    assert httpx.get(gw.url + "/version").status_code == 401
    with _raw(gw, token) as http:
        assert http.get("/version").json()["engines"]["tiny"] == {"kind": "fake", "version": "fake 1"}
        metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert (
        'airlock_requests_total{key="tester",model="tiny",route="/v1/chat/completions",status="200"}' in text
    )
    assert 'airlock_requests_total{key="-",model="-",route="/v1/models",status="401"}' in text
    assert 'airlock_engine_up{engine="tiny",kind="fake"} 1.0' in text
    assert 'airlock_time_to_first_token_seconds_count{model="tiny"}' in text
    assert (
        'airlock_request_duration_seconds_bucket{le="+Inf",model="tiny",route="/v1/chat/completions"}' in text
    )
    prompt = [
        line
        for line in text.splitlines()
        if line.startswith('airlock_prompt_tokens_total{key="tester",model="tiny"}')
    ]
    completion = [
        line
        for line in text.splitlines()
        if line.startswith('airlock_completion_tokens_total{key="tester",model="tiny"}')
    ]
    assert prompt and float(prompt[0].split()[-1]) >= 4  # 3 + 1 prompt words from the two requests above
    assert completion and float(completion[0].split()[-1]) >= 4
    assert "airlock_requests_in_flight" in text


def test_error_responses_carry_a_request_id(gw: GatewayThread) -> None:
    r = httpx.get(gw.url + "/v1/models")
    assert len(r.headers["x-request-id"]) == 32


def test_client_disconnect_cancels_the_upstream_stream(gw: GatewayThread, token: str) -> None:
    tiny = gw.supervisor.engines["tiny"].config
    engine = httpx.Client(base_url=tiny.base_url)
    before = engine.get("/stats").json()["cancelled"]
    body = {"model": "tiny", "messages": [{"role": "user", "content": "please hang"}], "stream": True}
    with _raw(gw, token) as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in got)
    deadline = time.monotonic() + 5
    while engine.get("/stats").json()["cancelled"] == before:
        assert time.monotonic() < deadline, "the engine kept generating after the client left"
        time.sleep(0.05)


def test_a_client_gone_after_the_last_event_is_still_metered(gw: GatewayThread, token: str) -> None:
    # The engine keeps the stream open after [DONE]; the client leaves as soon as it has the answer.
    # Its time to first token and its tokens were served: they count, though the client did not wait.
    def counts() -> tuple[float, float]:
        text = _raw(gw, token).get("/metrics").text
        ttft = completion = 0.0
        for line in text.splitlines():
            if line.startswith('airlock_time_to_first_token_seconds_count{model="tiny"}'):
                ttft = float(line.split()[-1])
            if line.startswith('airlock_completion_tokens_total{key="tester",model="tiny"}'):
                completion = float(line.split()[-1])
        return ttft, completion

    before = counts()
    body = {
        "model": "tiny", "stream": True, "max_tokens": 3,
        "messages": [{"role": "user", "content": "please linger"}],
    }  # fmt: skip
    with _raw(gw, token) as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line == "data: [DONE]":
                break  # and the client closes the connection
    deadline = time.monotonic() + 10
    while (after := counts()) == before:
        assert time.monotonic() < deadline, "a stream served in full went unmetered when its client left"
        time.sleep(0.05)
    assert after[0] == before[0] + 1
    assert after[1] == before[1] + 3


def test_client_disconnect_cancels_a_non_streamed_request(
    gw: GatewayThread, token: str, tmp_path: Path
) -> None:
    tiny = gw.supervisor.engines["tiny"].config
    engine = httpx.Client(base_url=tiny.base_url)
    before = engine.get("/stats").json()
    body = {"model": "tiny", "messages": [{"role": "user", "content": "please wait"}]}  # 3 s upstream
    with _raw(gw, token) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=body, timeout=0.3)
    deadline = time.monotonic() + 10  # the engine counts the request cancelled as the gateway drops it
    while (after := engine.get("/stats").json())["cancelled"] == before["cancelled"]:
        assert time.monotonic() < deadline, "the upstream request was not cancelled after the client left"
        time.sleep(0.05)
    assert after["requests"] == before["requests"] + 1
    assert after["completed"] == before["completed"], (
        "the upstream request ran to the end after the client left"
    )


def test_audit_log_records_who_used_what_but_not_the_text(gw: GatewayThread, client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="small", messages=[{"role": "user", "content": "classified words here"}], max_tokens=3
    )
    httpx.get(gw.url + "/v1/models")  # a 401
    path = gw.gateway.audit_log
    assert path is not None
    deadline = time.monotonic() + 5
    records: list[dict[str, object]] = []
    chat: list[dict[str, object]] = []
    # Wait for this test's own records: other tests' 401s may already be in the log.
    while not chat or not any(r.get("status") == 401 for r in records[records.index(chat[-1]) :]):
        assert time.monotonic() < deadline, records
        time.sleep(0.05)
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        chat = [
            r for r in records if r.get("route") == "/v1/chat/completions" and r.get("completion_tokens") == 3
        ]
    assert chat
    assert chat[-1]["key"] == "tester"
    assert chat[-1]["model"] == "tiny"
    assert chat[-1]["status"] == 200
    assert chat[-1]["client"] == "127.0.0.1"
    assert "classified" not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
