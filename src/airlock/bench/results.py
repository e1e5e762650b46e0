"""The results file: what a run measured, as versioned JSON that ``bench compare`` and ``bench report`` read.

The file holds the run's settings (never the API key), a summary per load level and every
request's record, so plots and new statistics can be drawn later without rerunning the load::

    {"format": "airlock-benchmarks/1", "info": {...}, "levels": [{"label": "8 users", "ttft": {...},
     "output_throughput": 170.2, ..., "records": [...]}], "warnings": []}

Written atomically (``airlock.common.fileio.write_atomic``: a temp name, fsync, ``os.replace``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

import orjson
from pydantic import Field, ValidationError

from airlock.common.fileio import write_atomic
from airlock.common.types import FrozenModel
from airlock.errors import ResultsError

FORMAT: Final = "airlock-benchmarks/1"


class Summary(FrozenModel):
    """Seconds (or seconds per token): mean and percentiles by linear interpolation (numpy's default)."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float


class Record(FrozenModel):
    """One request; times in seconds (``start`` from the level's start)."""

    start: float
    e2e: float | None = None
    ttft: float | None = None
    itl: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    detail: str | None = None


class LevelResult(FrozenModel):
    kind: Literal["concurrency", "rate"]
    value: float
    label: str
    duration_s: float = Field(description="from the level's first request to its last answer")
    requests: int
    ok: int
    failed: int
    errors: dict[str, int] = Field(default_factory=dict, description="failed requests by kind")
    error_examples: dict[str, str] = Field(default_factory=dict, description="the first detail of each kind")
    request_throughput: float = Field(description="successful requests per second")
    output_throughput: float = Field(description="output tokens per second, from the server's usage")
    prompt_throughput: float = Field(description="prompt tokens per second, from the server's usage")
    mean_prompt_tokens: float | None = None
    mean_output_tokens: float | None = None
    missing_usage: int = Field(0, description="successful requests whose stream carried no usage")
    max_in_flight: int = 0
    ttft: Summary | None = None
    itl: Summary | None = None
    e2e: Summary | None = None
    gap: Summary | None = Field(None, description="times between successive streamed chunks, all requests")
    goodput: float | None = Field(None, description="requests per second that met every SLO")
    slo_attainment: float | None = Field(None, description="share of all requests that met every SLO")
    records: list[Record] = Field(default_factory=list)


class Calibration(FrozenModel):
    """How synthetic prompts were sized: prompt tokens = intercept + per_word x words (server's count)."""

    intercept: float
    per_word: float
    words: int


class RunInfo(FrozenModel):
    url: str
    model: str
    endpoint: Literal["chat", "completions"]
    workload: str
    prompt_tokens: int | None = Field(None, description="the synthetic prompt length asked for")
    output_tokens: int
    ignore_eos: bool
    arrival: Literal["poisson", "constant"] | None = None
    requests_per_level: int | None = None
    duration_per_level_s: float | None = None
    slo: dict[str, float] = Field(default_factory=dict, description="seconds, by name: ttft, itl, e2e")
    seed: int
    warmup: int
    timeout_s: float
    extra_body: dict[str, Any] = Field(default_factory=dict)
    calibration: Calibration | None = None
    server: str | None = Field(None, description="the endpoint's Server header")
    keep_alive: bool = Field(
        True, description="False: the server closed connections, one per request was used"
    )
    airlock_version: str
    started_at: str
    finished_at: str
    host: dict[str, str] = Field(default_factory=dict)


class BenchResults(FrozenModel):
    format: Literal["airlock-benchmarks/1"] = FORMAT
    info: RunInfo
    levels: list[LevelResult]
    warnings: list[str] = Field(default_factory=list)

    def level(self, kind: str, value: float) -> LevelResult | None:
        return next((lv for lv in self.levels if lv.kind == kind and lv.value == value), None)


def save_results(results: BenchResults, path: Path) -> Path:
    data = orjson.dumps(results.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
    write_atomic(path, data)
    return path


def load_results(path: Path) -> BenchResults:
    """Read a results file; every problem is a ResultsError that names the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file") from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot be read: {exc}") from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise ResultsError(
            f"{path}: not an airlock bench results file (format {found!r}, expected {FORMAT!r})"
        )
    try:
        return BenchResults.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ResultsError(f"{path}: {where}: {first['msg']}") from exc
