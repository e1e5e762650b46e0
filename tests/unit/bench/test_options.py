"""Flag parsing and option checks: every mistake is a ConfigError that names the flag."""

from __future__ import annotations

from typing import Any

import pytest

from airlock.bench.options import (
    DEFAULT_DURATION_S,
    BenchOptions,
    Load,
    Slo,
    normalise_url,
    parse_levels,
    parse_seconds,
    parse_slo,
)
from airlock.errors import ConfigError

URL = "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2.5s", 2.5),
        ("3m", 180.0),
        ("1h", 3600.0),
        ("30", 30.0),
        (" 10 MS ", 0.01),
        (".5", 0.5),
    ],
)
def test_parse_seconds(text: str, seconds: float) -> None:
    assert parse_seconds(text, "--duration") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "fast", "10 days", "-1s", "0", "1.2.3s"])
def test_parse_seconds_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="--duration"):
        parse_seconds(text, "--duration")


def test_parse_levels() -> None:
    assert parse_levels("1,4,16,64", "--concurrency") == (1.0, 4.0, 16.0, 64.0)
    assert parse_levels(" 0.5, 2 ", "--rate") == (0.5, 2.0)
    for bad in ("1,,4", "a", "0", "-2", "inf"):
        with pytest.raises(ConfigError, match="--rate"):
            parse_levels(bad, "--rate")


def test_parse_slo() -> None:
    assert parse_slo("ttft=500ms,itl=50ms") == Slo(ttft_s=0.5, itl_s=0.05)
    assert parse_slo("e2e=10s") == Slo(e2e_s=10.0)
    assert parse_slo("ttft=1s").describe() == "ttft<=1000ms"
    for bad, message in (
        ("tpot=5ms", "ttft=..."),
        ("ttft=5ms,ttft=6ms", "given twice"),
        ("ttft", "ttft=..."),
        ("", "at least one"),
        ("itl=soon", "--slo itl"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_slo(bad)


@pytest.mark.parametrize(
    ("given", "fix"), [("ttft=500", "ttft=500ms"), ("itl=0.05", "itl=0.05ms"), ("e2e= 10 ", "e2e=10s")]
)
def test_slo_without_a_unit_is_refused_with_the_spellings_that_mean_it(given: str, fix: str) -> None:
    """``ttft=500`` once meant 500 seconds (every request good) beside a table in milliseconds."""
    with pytest.raises(ConfigError) as info:
        parse_slo(f"e2e=30s,{given}" if not given.startswith("e2e") else given)
    assert "has no unit" in info.value.message and fix in info.value.message
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
        ("https://llm.internal/openai/v1", "https://llm.internal/openai/v1"),
    ],
)
def test_normalise_url(given: str, base: str) -> None:
    assert normalise_url(given) == base


@pytest.mark.parametrize("bad", ["127.0.0.1:8000", "ftp://x/v1", "http://", "http://h/v1?x=1"])
def test_normalise_url_rejects(bad: str) -> None:
    with pytest.raises(ConfigError):
        normalise_url(bad)


def test_loads() -> None:
    assert Load("concurrency", 8).label == "8 users"
    assert Load("concurrency", 1).label == "1 user"
    assert Load("rate", 0.5).label == "0.5 req/s"
    with pytest.raises(ConfigError, match="whole number"):
        Load("concurrency", 2.5)
    with pytest.raises(ConfigError, match="positive"):
        Load("rate", 0)


def test_options_checks() -> None:
    loads = (Load("concurrency", 1),)
    assert BenchOptions(url=URL, loads=loads).bound_duration_s == DEFAULT_DURATION_S
    assert BenchOptions(url=URL, loads=loads, requests=5).bound_duration_s is None
    assert BenchOptions(url=URL, loads=loads, requests=5, duration_s=2).bound_duration_s == 2
    cases: list[tuple[dict[str, Any], str]] = [
        ({"loads": ()}, "at least one load level"),
        ({"loads": (Load("concurrency", 1), Load("rate", 1))}, "not both"),
        ({"requests": 0}, "--requests"),
        ({"duration_s": 0.0}, "--duration"),
        ({"output_tokens": 0}, "--output-tokens"),
        ({"timeout_s": 0.0}, "--timeout"),
        ({"warmup": -1}, "--warmup"),
        ({"extra_body": {"stream": False}}, "'stream'"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            BenchOptions(**{"url": URL, "loads": loads, **change})


def test_api_key_is_not_in_repr() -> None:
    options = BenchOptions(url=URL, loads=(Load("concurrency", 1),), api_key="sk-secret")
    assert "sk-secret" not in repr(options)
