"""The run around the levels: choosing the model, servers without usage or keep-alive, prompt sizing."""

from __future__ import annotations

from typing import Any

import pytest

from airlock.bench import BenchOptions, Load, Observer, run_bench, runner, workload
from airlock.bench.runner import EndpointInfo
from airlock.errors import EndpointError

from .conftest import scripted_app, serve_on_thread


def options(url: str, script: dict[str, Any], **kw: Any) -> BenchOptions:
    base: dict[str, Any] = {
        "url": url,
        "model": "a",
        "loads": (Load("concurrency", 2),),
        "requests": 6,
        "prompt_tokens": 50,
        "output_tokens": 4,
        "extra_body": {"script": script},
    }
    return BenchOptions(**{**base, **kw})


def test_several_models_need_a_choice(scripted_url: str) -> None:
    with pytest.raises(EndpointError, match=r"lists 2 models \(a, b\)") as info:
        run_bench(options(scripted_url, {}, model=None))
    assert info.value.hint == "pick one with --model"


# What GET /models lists -> the model bench picks. The airlock gateway gives every name (alias or
# not) the root of the model it serves; vLLM gives its served name the root it was started with.
ONE_MODEL_LISTS = [
    pytest.param(
        [{"id": "smollm2", "root": "smollm2"}, {"id": "default", "root": "smollm2"}], "smollm2", id="gateway"
    ),
    pytest.param(
        [{"id": "default", "root": "smollm2"}, {"id": "smollm2"}], "smollm2", id="alias-first-no-root"
    ),
    pytest.param(
        [{"id": "default", "root": "smollm2"}, {"id": "smollm2", "root": "HuggingFaceTB/SmolLM2-135M"}],
        "smollm2",
        id="root-chain",
    ),
    pytest.param([{"id": "served", "root": "/models/smollm2"}], "served", id="vllm-path-root"),
    pytest.param([{"id": "only"}], "only", id="no-root"),
]


@pytest.mark.parametrize(("listed", "picked"), ONE_MODEL_LISTS)
def test_aliases_of_one_model_are_one_model(listed: list[dict[str, Any]], picked: str) -> None:
    """The README's first bench against its default server once failed: 'lists 2 models' (smollm2, default)."""
    with serve_on_thread(scripted_app(listed)) as url:
        results = run_bench(options(url + "/v1", {"chunks": 2}, model=None))
    assert results.info.model == picked
    assert results.levels[0].ok == 6


def test_distinct_roots_are_distinct_models() -> None:
    listed = [
        {"id": "small", "root": "small"},
        {"id": "default", "root": "small"},
        {"id": "big", "root": "big"},
    ]
    with serve_on_thread(scripted_app(listed)) as url, pytest.raises(EndpointError) as info:
        run_bench(options(url + "/v1", {}, model=None))
    assert "lists 2 models (small (alias default), big)" in info.value.message
    assert info.value.hint == "pick one with --model"
    roots = {"a": None, "b": None, "b2": "b", "loop": "loop2", "loop2": "loop"}
    assert EndpointInfo(roots=roots, server=None).distinct() == {
        "a": ["a"],
        "b": ["b", "b2"],
        "loop": ["loop", "loop2"],
    }


def test_an_empty_model_list_says_so() -> None:
    with serve_on_thread(scripted_app([])) as url, pytest.raises(EndpointError) as info:
        run_bench(options(url + "/v1", {}, model=None))
    assert "lists 0 models" in info.value.message and info.value.hint == "is a model loaded there?"


def test_a_model_not_listed_is_only_a_warning(scripted_url: str) -> None:
    results = run_bench(options(scripted_url, {"chunks": 2}, model="c"))
    assert results.levels[0].ok == 6
    assert any("'c' is not in the endpoint's model list (a, b)" in w for w in results.warnings)
    assert results.info.server is not None and "aiohttp" in results.info.server  # from GET /models


def test_prompt_sizing_uses_the_servers_count(scripted_url: str) -> None:
    # The scripted server counts words plus 3 tokens of "template".
    results = run_bench(options(scripted_url, {"chunks": 2}))
    calibration = results.info.calibration
    assert calibration is not None
    assert (calibration.intercept, calibration.per_word, calibration.words) == (3.0, 1.0, 47)
    assert results.levels[0].mean_prompt_tokens == 50
    assert results.info.keep_alive


def test_a_server_without_usage_is_flagged_not_guessed(scripted_url: str) -> None:
    results = run_bench(options(scripted_url, {"chunks": 3, "usage": False}))
    (level,) = results.levels
    assert level.ok == 6 and level.missing_usage == 6
    assert level.output_throughput == 0.0 and level.mean_output_tokens is None
    assert results.info.calibration is None
    assert any("sent no usage" in w for w in results.warnings)


def test_a_server_that_drops_connections_after_streams(scripted_url: str) -> None:
    results = run_bench(options(scripted_url, {"chunks": 2, "close": True}, requests=10))
    (level,) = results.levels
    assert (level.ok, level.failed) == (10, 0), level.error_examples
    assert not results.info.keep_alive


def test_a_busy_first_answer_is_tried_again(scripted_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "PROBE_BACKOFF_S", 0.01)
    with pytest.raises(EndpointError, match="HTTP 503: overloaded"):
        run_bench(options(scripted_url, {"status": 503, "text": "overloaded"}))
    with pytest.raises(EndpointError, match="HTTP 404"):  # not transient: no second try
        run_bench(options(scripted_url, {"status": 404}))


def test_retries_are_reported(scripted_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []

    class Seen(Observer):
        def warning(self, text: str) -> None:
            warnings.append(text)

    monkeypatch.setattr(runner, "PROBE_BACKOFF_S", 0.01)
    with pytest.raises(EndpointError):
        run_bench(options(scripted_url, {"status": 429, "text": "slow down"}), Seen())
    assert len(warnings) == runner.PROBE_TRIES - 1
    assert all("answered http 429 (slow down); trying again" in w for w in warnings)


def test_a_dataset_is_read_once_even_with_a_warm_up(
    scripted_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = tmp_path / "d.jsonl"
    dataset.write_text('{"prompt": "one two three"}\n{"prompt": "four five"}\n')
    reads: list[str] = []
    real = workload.load_dataset  # what runner imported

    def counting(source: str, **kw: Any) -> Any:
        reads.append(source)
        return real(source, **kw)

    monkeypatch.setattr(runner, "load_dataset", counting)
    results = run_bench(options(scripted_url, {"chunks": 2}, dataset=str(dataset), warmup=2))
    assert reads == [str(dataset)]
    assert results.levels[0].ok == 6
