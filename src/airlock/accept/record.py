"""``airlock accept record``: serve a spec, ask each prompt greedily, write the golden file."""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from airlock import __version__
from airlock.accept.golden import GoldenFile, Prompt, Sampling
from airlock.accept.identity import model_records
from airlock.accept.run import RunRequest, run_prompts
from airlock.accept.served import accept_spec
from airlock.common.fileio import write_atomic
from airlock.errors import ConfigError, EngineError
from airlock.settings import Settings
from airlock.spec import Spec
from airlock.store.resolve import spec_store


@dataclass(frozen=True)
class RecordOptions:
    spec: Spec
    prompts: list[Prompt]
    out: Path
    sampling: Sampling = field(default_factory=Sampling)
    workdir: Path | None = None  # the served stack's log and audit; default: a temporary folder


def pairs_for(spec: Spec, prompts: list[Prompt]) -> list[tuple[str, str]]:
    """Each prompt with each model it is for (its ``model``, else every model of the spec)."""
    names = [m.name for m in spec.models]
    pairs: list[tuple[str, str]] = []
    for prompt in prompts:
        if prompt.model is not None and prompt.model not in names:
            raise ConfigError(
                f"prompt {prompt.id!r} is for model {prompt.model!r}, which the spec does not serve",
                hint=f"the spec's models: {', '.join(names)}",
            )
        pairs += [(prompt.id, name) for name in names if prompt.model in (None, name)]
    return pairs


def startup_timeout(spec: Spec) -> float:
    return sum(m.engine.startup_timeout_s for m in spec.models) + 30.0


def record(options: RecordOptions, settings: Settings) -> GoldenFile:
    """Serve ``options.spec``, ask every prompt, and write the golden file to ``options.out``."""
    from airlock.engines.registry import build_engines

    spec = options.spec
    if not spec.models:
        raise ConfigError("the spec lists no models")
    if options.out.is_dir():  # found out before minutes of serving, not when writing
        raise ConfigError(
            f"--out {options.out} is a folder",
            hint=f"name the golden file, e.g. {options.out / 'golden.json'}",
        )
    pairs = pairs_for(spec, options.prompts)
    store = spec_store(spec, settings)
    models = model_records(spec, build_engines(spec, settings), store)
    with tempfile.TemporaryDirectory(prefix="airlock-accept-") as tmp:
        workdir = options.workdir or Path(tmp)
        request = RunRequest(
            spec=accept_spec(spec, workdir / "audit.jsonl", store), prompts=options.prompts, pairs=pairs,
            sampling=options.sampling, workdir=workdir, startup_timeout_s=startup_timeout(spec),
        )  # fmt: skip
        replies = run_prompts(request)
    failed = [r for r in replies if r.answer is None]
    if failed:
        first = failed[0]
        raise EngineError(
            f"{len(failed)} of {len(replies)} prompts got no answer; first: {first.model}, "
            f"{first.prompt!r}: {first.error}",
            hint="nothing was recorded",
        )
    golden = GoldenFile(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        airlock_version=__version__, sampling=options.sampling, models=models, prompts=options.prompts,
        answers=[r.answer for r in replies if r.answer is not None],
    )  # fmt: skip
    data = golden.model_dump_json(indent=1).encode() + b"\n"
    try:
        write_atomic(options.out, data)
    except OSError as exc:  # minutes of answers are not lost: they are saved in the temp folder
        keep = Path(tempfile.gettempdir()) / f"airlock-golden-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.json"
        keep.write_bytes(data)
        raise ConfigError(
            f"cannot write {options.out}: {exc.strerror}", hint=f"the answers were saved to {keep}"
        ) from exc
    return golden
