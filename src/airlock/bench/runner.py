"""A whole bench run: resolve the model, check the endpoint, size the prompts, warm up, run each level.

Before any load, one small request must succeed, so a wrong URL, key or model name is one clear
:class:`~airlock.errors.EndpointError` instead of a table full of errors. Synthetic prompts are
sized from two probe requests, reading ``usage.prompt_tokens`` (see
:func:`airlock.bench.workload.fit_tokens`). Warm-up requests (``warmup``) are sent and discarded.

The core reports progress to an :class:`Observer` and returns :class:`BenchResults`; it prints nothing::

    options = BenchOptions(url="http://127.0.0.1:8000/v1", loads=(Load("concurrency", 8),), requests=100)
    results = run_bench(options)
    results.levels[0].output_throughput
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson
import uvloop

from airlock import __version__
from airlock.bench.client import RequestRecord, Sender
from airlock.bench.loadgen import run_level
from airlock.bench.options import BenchOptions, Load
from airlock.bench.results import BenchResults, Calibration, LevelResult, RunInfo
from airlock.bench.stats import summarise_level
from airlock.bench.workload import DatasetPrompts, Prompt, Prompts, SyntheticPrompts, fit_tokens, load_dataset
from airlock.common.words import counted
from airlock.errors import BenchError, EndpointError

#: Words in the two probes that size synthetic prompts (the second grows with the target).
PROBE_WORDS = 16


class BenchInterrupted(BenchError):
    """The run was stopped (Ctrl-C) after ``results.levels`` had finished; the CLI saves those."""

    exit_code = 130

    def __init__(self, results: BenchResults) -> None:
        done = ", ".join(lv.label for lv in results.levels) or "none"
        super().__init__(f"interrupted; levels finished: {done}")
        self.results = results


class Observer:
    """Progress hooks, all no-ops here; the CLI overrides them to draw its progress display."""

    def phase(self, text: str) -> None:
        """A step before the load (resolving the model, sizing prompts, warming up)."""

    def level_started(self, index: int, load: Load, requests: int | None, duration_s: float | None) -> None:
        """Level ``index`` begins, with its bounds."""

    def request_done(self, index: int, record: RequestRecord) -> None:
        """A request of level ``index`` ended (succeeded or failed)."""

    def tick(self, index: int, elapsed_s: float, in_flight: int) -> None:
        """Level ``index`` has run ``elapsed_s`` with ``in_flight`` requests open (every 0.25 s)."""

    def level_done(self, index: int, result: LevelResult) -> None:
        """Level ``index`` ended; ``result`` holds its numbers."""

    def warning(self, text: str) -> None:
        """Something the reader of the results should know (it is kept in the results too)."""


@dataclass
class _Run:
    options: BenchOptions
    observer: Observer
    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.observer.warning(text)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _refusal(status: int, body: str, what: str) -> EndpointError:
    hint = None
    if status in (401, 403):
        hint = "give the key with --api-key, AIRLOCK_API_KEY or OPENAI_API_KEY"
    elif status == 404:
        hint = "check the URL (the API base, e.g. http://HOST:PORT/v1) and --model"
    return EndpointError(f"{what}: HTTP {status}: {body[:300].strip()}", hint=hint)


class _Unreachable(EndpointError):
    """No HTTP answer at all (as opposed to an answer we did not like)."""


@dataclass(frozen=True)
class EndpointInfo:
    """What ``GET /models`` said: each listed name with its ``root`` (None where the entry has none),
    and the Server header."""

    roots: dict[str, str | None]
    server: str | None

    @property
    def models(self) -> tuple[str, ...]:
        """Every listed name, aliases included."""
        return tuple(self.roots)

    def distinct(self) -> dict[str, list[str]]:
        """The models behind the names, each keyed by the name to send and valued by all its names.

        Names that share a ``root`` (vLLM's field; the airlock gateway's too, where an alias's root
        is the model it points to) are one model, following a root that is itself a listed name
        (``default`` -> ``smollm2`` -> its weights). The name to send is the root where it is
        listed, else the model's own name rather than an alias's (vLLM's root can be the path it
        was started with, which it does not answer to).
        """
        groups: dict[str, list[str]] = {}
        for name in self.roots:
            groups.setdefault(self._origin(name), []).append(name)
        return {(origin if origin in names else self._own(names)): names for origin, names in groups.items()}

    def _origin(self, name: str) -> str:
        """Where ``name``'s roots lead: an unlisted root, a name without one, or (a loop) its least name."""
        chain = [name]
        while (root := self.roots.get(chain[-1])) and root in self.roots and root not in chain:
            chain.append(root)
        if not root:
            return chain[-1]
        return min(chain[chain.index(root) :]) if root in chain else root

    def _own(self, names: list[str]) -> str:
        """Of one model's names, the first that is not an alias of another listed name."""
        return next((n for n in names if self.roots[n] not in self.roots), names[0])


async def list_models(session: aiohttp.ClientSession, options: BenchOptions) -> EndpointInfo:
    """``GET /models``: the names the endpoint serves (with their roots), and its Server header."""
    url = f"{options.url}/models"
    try:
        async with session.get(
            url, headers=_headers(options.api_key), timeout=aiohttp.ClientTimeout(30)
        ) as resp:
            body = await resp.text(errors="replace")
            server = resp.headers.get("Server")
            if resp.status != 200:
                raise _refusal(resp.status, body, f"GET {url}")
    except aiohttp.ClientError as exc:
        raise _Unreachable(f"cannot reach {url}: {exc}", hint="is the server running there?") from exc
    except TimeoutError as exc:
        raise _Unreachable(f"GET {url} did not answer in 30 s") from exc
    try:
        roots = {
            str(m["id"]): (str(m["root"]) if m.get("root") else None) for m in orjson.loads(body)["data"]
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise EndpointError(
            f"GET {url}: not an OpenAI model list", hint="give the model with --model"
        ) from exc
    return EndpointInfo(roots=roots, server=server)


async def resolve_model(
    session: aiohttp.ClientSession, options: BenchOptions, run: _Run
) -> tuple[str, str | None]:
    """(the model to load, the Server header): ``--model``, or the endpoint's only model.

    Aliases of one model (names sharing a ``root``) are that one model. With ``--model`` a missing
    or odd model list is only a warning: the first request decides.
    """
    try:
        info = await list_models(session, options)
    except _Unreachable:
        raise
    except EndpointError as exc:
        if options.model:
            run.warn(f"{exc}; going on with --model {options.model}")
            return options.model, None
        raise
    if options.model:
        if options.model not in info.models:
            run.warn(f"{options.model!r} is not in the endpoint's model list ({', '.join(info.models)})")
        return options.model, info.server
    models = info.distinct()
    if len(models) != 1:
        served = ", ".join(
            name + "".join(f" (alias {n})" for n in names if n != name) for name, names in models.items()
        )
        raise EndpointError(
            f"{options.url}/models lists {counted(len(models), 'model')}"
            + (f" ({served})" if served else ""),
            hint="pick one with --model" if models else "is a model loaded there?",
        )
    return next(iter(models)), info.server


#: A first request answered with one of these is tried again (a gateway says 503 while an engine
#: restarts), after PROBE_BACKOFF_S, then twice that.
_TRANSIENT = ("http 429", "http 502", "http 503")
PROBE_TRIES = 3
PROBE_BACKOFF_S = 1.0


async def _probe(run: _Run, sender: Sender, prompt: Prompt) -> RequestRecord:
    for attempt in range(1, PROBE_TRIES + 1):
        record = await sender.send(prompt)
        if record.error not in _TRANSIENT or attempt == PROBE_TRIES:
            break
        run.warn(f"a first request was answered {record.error} ({(record.detail or '')[:120]}); trying again")
        await asyncio.sleep(PROBE_BACKOFF_S * attempt)
    if record.error is not None:
        if record.error.startswith("http "):
            raise _refusal(int(record.error[5:]), record.detail or "", f"the first request to {sender.url}")
        raise EndpointError(
            f"the first request to {sender.url} failed ({record.error}): {record.detail}",
            hint="is the server running and is this its API base?",
        )
    return record


async def _calibrate(run: _Run, sender: Sender) -> Calibration | None:
    """Size synthetic prompts from two probes' ``usage.prompt_tokens``; None when there is no usage."""
    options = run.options
    run.observer.phase("sizing synthetic prompts")
    probes = SyntheticPrompts(1, output_tokens=1, endpoint=options.endpoint, seed=f"{options.seed}/probes")
    measured: list[tuple[int, int]] = []
    for words in (PROBE_WORDS, PROBE_WORDS + max(PROBE_WORDS, options.prompt_tokens)):
        probes.words = words
        record = await _probe(run, sender, probes.next())
        if record.prompt_tokens is None:
            run.warn(
                _NO_USAGE
                + f"; synthetic prompts are {counted(options.prompt_tokens, 'word')}, not measured tokens"
            )
            return None
        measured.append((words, record.prompt_tokens))
    fit = fit_tokens(measured[0], measured[1])
    return Calibration(
        intercept=fit.intercept, per_word=fit.per_word, words=fit.words_for(options.prompt_tokens)
    )


async def _prepare(run: _Run, sender: Sender) -> tuple[SyntheticPrompts | DatasetPrompts, Calibration | None]:
    """Check the endpoint with a first request, then build the prompt source."""
    options = run.options
    run.observer.phase("checking the endpoint")
    if options.dataset is None:
        calibration = await _calibrate(run, sender)
        words = calibration.words if calibration else options.prompt_tokens
        return _prompts_for(options, options.seed, words), calibration
    dataset = _prompts_for(options, options.seed, 0)
    probe = await _probe(run, sender, Prompt(max_tokens=1, text="Say hello."))
    if probe.output_tokens is None:
        run.warn(_NO_USAGE)
    return dataset, None


_NO_USAGE = (
    "the endpoint sent no usage in its stream (stream_options.include_usage): "
    "token counts and token throughput are missing from these results"
)


async def _warm_up(run: _Run, sender: Sender, prompts: SyntheticPrompts | DatasetPrompts) -> None:
    """A few requests before the first level, with the run's prompts in their own order."""
    options = run.options
    if not options.warmup:
        return
    run.observer.phase(f"warming up ({counted(options.warmup, 'request')})")
    users = min(options.warmup, max(max(int(load.value), 1) for load in options.loads))
    warm = await run_level(
        sender,
        prompts.reseeded(f"{options.seed}/warm-up"),
        Load("concurrency", users),
        requests=options.warmup,
        duration_s=None,
    )
    failed = sum(1 for r in warm.records if not r.ok)
    if failed:
        run.warn(f"{failed} of {counted(options.warmup, 'warm-up request')} failed")


def _host() -> dict[str, str]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count() or 0),
        "python": platform.python_version(),
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _prompts_for(options: BenchOptions, seed: int | str, words: int) -> SyntheticPrompts | DatasetPrompts:
    if options.dataset is not None:
        return load_dataset(
            options.dataset, output_tokens=options.output_tokens, endpoint=options.endpoint, seed=seed
        )
    return SyntheticPrompts(words, output_tokens=options.output_tokens, endpoint=options.endpoint, seed=seed)


async def _run_levels(
    run: _Run, sender: Sender, prompts: Prompts, finish: Callable[[list[LevelResult]], BenchResults]
) -> list[LevelResult]:
    """Each level in turn; on cancellation (Ctrl-C), the finished ones travel in BenchInterrupted."""
    options = run.options
    levels: list[LevelResult] = []
    duration = options.bound_duration_s
    for index, load in enumerate(options.loads):
        run.observer.level_started(index, load, options.requests, duration)
        try:
            level = await run_level(
                sender, prompts, load, requests=options.requests, duration_s=duration,
                arrival=options.arrival, seed=options.seed + 1000 * (index + 1),
                on_record=functools.partial(run.observer.request_done, index),
                on_tick=functools.partial(run.observer.tick, index),
            )  # fmt: skip
        except asyncio.CancelledError:
            run.warnings.append(f"interrupted during {load.label}: that level and later ones are missing")
            raise BenchInterrupted(finish(levels)) from None
        result = summarise_level(load, level.records, duration_s=level.duration_s, slo=options.slo)
        levels.append(result)
        run.observer.level_done(index, result)
        if result.missing_usage and not any(w.startswith(_NO_USAGE) for w in run.warnings):
            run.warn(_NO_USAGE)
    return levels


async def run_bench_async(
    options: BenchOptions,
    observer: Observer | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
    connector: aiohttp.BaseConnector | None = None,
) -> BenchResults:
    """The whole run on the running loop. ``clock`` times the requests and ``connector`` carries
    them (TCP by default): tests pass a virtual clock and a Unix-socket connector to an in-process server."""
    run = _Run(options, observer or Observer())
    started_at = _now()
    connector = connector or aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, read_bufsize=1 << 20) as session:
        run.observer.phase(f"asking {options.url} for its model")
        model, server = await resolve_model(session, options, run)
        sender = Sender(
            session, options.url, model=model, endpoint=options.endpoint, api_key=options.api_key,
            ignore_eos=options.ignore_eos, extra_body=options.extra_body, timeout_s=options.timeout_s,
            clock=clock,
        )  # fmt: skip
        try:
            prompts, calibration = await _prepare(run, sender)
            await _warm_up(run, sender, prompts)

            def finish(levels: list[LevelResult]) -> BenchResults:
                info = _info(options, model, prompts, calibration, started_at, server, sender.keeps_alive)
                return BenchResults(info=info, levels=levels, warnings=run.warnings)

            return finish(await _run_levels(run, sender, prompts, finish))
        finally:
            await sender.aclose()


def _info(
    options: BenchOptions,
    model: str,
    prompts: Prompts,
    calibration: Calibration | None,
    started_at: str,
    server: str | None,
    keep_alive: bool,
) -> RunInfo:
    return RunInfo(
        url=options.url,
        model=model,
        endpoint=options.endpoint,
        workload=prompts.describe(),
        prompt_tokens=None if options.dataset else options.prompt_tokens,
        output_tokens=options.output_tokens,
        ignore_eos=options.ignore_eos,
        arrival=options.arrival if options.loads[0].kind == "rate" else None,
        requests_per_level=options.requests,
        duration_per_level_s=options.bound_duration_s,
        slo=options.slo.as_dict(),
        seed=options.seed,
        warmup=options.warmup,
        timeout_s=options.timeout_s,
        extra_body=dict(options.extra_body),
        calibration=calibration,
        server=server,
        keep_alive=keep_alive,
        airlock_version=__version__,
        started_at=started_at,
        finished_at=_now(),
        host=_host(),
    )


def run_bench(options: BenchOptions, observer: Observer | None = None) -> BenchResults:
    """Run the benchmark to its end on a fresh event loop (uvloop) and return its results."""
    return uvloop.run(run_bench_async(options, observer))
