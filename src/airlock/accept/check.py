"""``airlock accept check``: replay the golden prompts on this side, with the network cut, and judge.

The installed spec is served in a fresh network namespace (:mod:`airlock.accept.sandbox`), each
golden (prompt, model) pair is asked again, and the report holds one check per question the change
board asks: is the stack up; per model, are these the recorded weights, did every prompt get an
answer, do the answers match (exact where the weights, engine, its version and the hardware are the
recording's, else the stated tolerance), are time to first token and tokens per second within the
floors; does the audit chain of the run verify; and did nothing try to reach the outside.
"""

from __future__ import annotations

import datetime as dt
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from airlock import __version__
from airlock.accept.compare import Tolerance, compare
from airlock.accept.egress import EgressEvent
from airlock.accept.golden import STORE_GOLDEN, GoldenFile, ModelRecord
from airlock.accept.record import startup_timeout
from airlock.accept.report import (
    AcceptReport,
    AnswerResult,
    CheckResult,
    Floors,
    ModelFigures,
)
from airlock.accept.run import Reply, RunRequest, RunResult
from airlock.accept.served import accept_spec
from airlock.common.words import counted
from airlock.errors import ConfigError
from airlock.settings import Settings
from airlock.spec import RemoteEngineSpec, Spec
from airlock.store.layout import STORE_FILES
from airlock.store.resolve import spec_store

Runner = Callable[[RunRequest], RunResult]


@dataclass(frozen=True)
class CheckOptions:
    spec: Spec
    spec_source: str
    golden: GoldenFile
    golden_source: str
    out: Path  # the report's folder; the run's logs and audit go to OUT/run/
    tolerance: Tolerance = field(default_factory=Tolerance)
    exact: bool | None = None  # None: exact where the recording's weights, engine and hardware are these
    floors: Floors = field(default_factory=lambda: Floors(max_ttft_s=30.0, min_tokens_per_s=1.0))


def default_golden(spec: Spec, settings: Settings) -> Path:
    """Where pack's ``files:`` entry ``{path: golden.json, dest: accept/golden.json}`` lands."""
    return spec_store(spec, settings) / STORE_FILES / STORE_GOLDEN


def same_platform(recorded: ModelRecord, here: ModelRecord) -> bool:
    return (recorded.digest, recorded.engine, recorded.engine_version, recorded.hardware) == (
        here.digest,
        here.engine,
        here.engine_version,
        here.hardware,
    )


def _platform_difference(recorded: ModelRecord, here: ModelRecord) -> str:
    changed = [
        f"{what} {a!r} -> {b!r}"
        for what, a, b in (
            ("engine", recorded.engine, here.engine),
            ("version", recorded.engine_version, here.engine_version),
            ("hardware", recorded.hardware, here.hardware),
        )
        if a != b
    ]
    return "; ".join(changed)


def run_check(options: CheckOptions, settings: Settings, *, runner: Runner | None = None) -> AcceptReport:
    """Serve, replay, compare and judge; the report is returned unsigned (``write_signed`` signs it)."""
    from airlock.accept.identity import model_records
    from airlock.accept.sandbox import require_namespace_tools, run_sandboxed
    from airlock.engines.registry import build_engines

    spec, golden = options.spec, options.golden
    outside = [
        m.name
        for m in spec.models
        if isinstance(m.engine, RemoteEngineSpec) or getattr(m.engine, "image", None)
    ]
    if outside:
        raise ConfigError(
            f"accept check serves every engine inside its own network namespace; {', '.join(outside)} "
            "would run outside it (a remote engine, or a container image started by a daemon)",
            hint="check a local engine of the same model, or the container path with `airlock deploy`'s network policy",
        )
    if runner is None:
        require_namespace_tools()  # before minutes of hashing the weights
    served_names = {m.name for m in spec.models}
    store = spec_store(spec, settings)
    here = {r.name: r for r in model_records(spec, build_engines(spec, settings), store)}
    pairs = [(a.prompt, a.model) for a in golden.answers if a.model in served_names]
    workdir = options.out / "run"
    _clear_run_folder(workdir)
    request = RunRequest(
        spec=accept_spec(spec, workdir / "audit.jsonl", store), prompts=golden.prompts, pairs=pairs,
        sampling=golden.sampling, workdir=workdir, startup_timeout_s=startup_timeout(spec),
    )  # fmt: skip
    result = (runner or run_sandboxed)(request)
    checks: list[CheckResult] = []
    if result.error:
        checks.append(CheckResult(name="stack", status="fail", detail=result.error))
    else:
        checks.append(
            CheckResult(
                name="stack", status="pass", detail=f"{counted(len(served_names), 'model')} served and ready"
            )
        )
    answers: list[AnswerResult] = []
    figures: list[ModelFigures] = []
    replies = {(r.prompt, r.model): r for r in result.replies}
    for name in sorted({a.model for a in golden.answers} | served_names):
        checks += _model_checks(name, options, here.get(name), replies, answers, figures, result)
    checks.append(_audit_check(workdir / "audit.jsonl", sum(1 for r in result.replies if r.answer)))
    checks.append(_egress_check(result))
    return AcceptReport(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        airlock_version=__version__,
        outcome="fail" if any(c.status == "fail" for c in checks) else "pass",
        spec=options.spec_source, golden=options.golden_source, golden_created=golden.created,
        comparison=_rule(options), floors=options.floors, recorded=golden.models,
        here=list(here.values()), checks=checks, answers=answers, figures=figures,
        egress=result.egress, dns_lookups=result.dns_lookups,
    )  # fmt: skip


RUN_MARK = ".airlock-accept-run"


def _clear_run_folder(workdir: Path) -> None:
    """Remove an earlier run's OUT/run/ and make it afresh, marked as ours. A folder that is not an
    earlier run's (``--out /`` would name /run) is never removed."""
    if workdir.is_symlink() or (workdir.exists() and not workdir.is_dir()):
        raise ConfigError(f"{workdir} is not a folder of an earlier acceptance run; it is left alone",
                          hint="give --out a new or empty folder")  # fmt: skip
    if workdir.is_dir():
        ours = (workdir / RUN_MARK).is_file() or (workdir / "run-request.json").is_file()
        if not ours and any(workdir.iterdir()):
            raise ConfigError(
                f"{workdir} already exists and is not the folder of an earlier acceptance run; it is left "
                "alone (accept check clears OUT/run/ before each run)",
                hint="give --out a new or empty folder",
            )
        shutil.rmtree(workdir)
    try:
        workdir.mkdir(parents=True)
        (workdir / RUN_MARK).write_text("airlock accept check's working folder: cleared before each run\n")
    except OSError as exc:
        raise ConfigError(
            f"cannot make {workdir}: {exc.strerror}", hint="give --out a folder that can be written"
        ) from exc


def _rule(options: CheckOptions) -> str:
    if options.exact is True:
        return "exact text, everywhere (--exact)"
    tolerance = options.tolerance.describe()
    if options.exact is False:
        return f"tolerance everywhere (--tolerance): {tolerance}"
    return (
        f"exact text where weights, engine, version and hardware are the recording's; elsewhere {tolerance}"
    )


def _model_checks(
    name: str,
    options: CheckOptions,
    here: ModelRecord | None,
    replies: dict[tuple[str, str], Reply],
    answers: list[AnswerResult],
    figures: list[ModelFigures],
    result: RunResult,
) -> list[CheckResult]:
    golden = options.golden
    recorded = golden.model(name)
    expected = [a for a in golden.answers if a.model == name]
    if here is None:
        return [
            CheckResult(
                name=f"served: {name}", status="fail", detail="recorded, but this spec does not serve it"
            )
        ]
    if recorded is None or not expected:
        return [
            CheckResult(
                name=f"recorded: {name}",
                status="fail",
                detail="served, but the golden file has no answers for it",
            )
        ]
    checks: list[CheckResult] = []
    if recorded.digest == here.digest:
        checks.append(
            CheckResult(name=f"weights: {name}", status="pass", detail=f"the recording's: {here.digest}")
        )
    else:
        checks.append(
            CheckResult(
                name=f"weights: {name}", status="fail",
                detail=f"not the recorded weights: recorded {recorded.digest}, here {here.digest}",
            )
        )  # fmt: skip
    exact = options.exact if options.exact is not None else same_platform(recorded, here)
    got = [(a, replies.get((a.prompt, name))) for a in expected]
    missing = [a.prompt for a, r in got if r is None or r.answer is None]
    if result.error:
        checks.append(CheckResult(name=f"answers: {name}", status="fail", detail="the stack did not start"))
    elif missing:
        errors = [r.error for a, r in got if r is not None and r.error]
        detail = f"{len(missing)} of {len(expected)} prompts got no answer: {', '.join(missing[:5])}"
        detail += f" (first error: {errors[0]})" if errors else ""
        checks.append(CheckResult(name=f"answers: {name}", status="fail", detail=detail))
    else:
        checks.append(
            CheckResult(
                name=f"answers: {name}",
                status="pass",
                detail=f"{len(expected)} of {len(expected)} prompts answered",
            )
        )
    failed: list[str] = []
    for answer, reply in got:
        if reply is None or reply.answer is None:
            answers.append(
                AnswerResult(
                    prompt=answer.prompt, model=name, mode="none", passed=False,
                    detail=(reply.error if reply else None) or "not asked: the stack did not start",
                    expected=answer.text, got=None,
                )
            )  # fmt: skip
            failed.append(answer.prompt)
            continue
        c = compare(answer, reply.answer, exact=exact, tolerance=options.tolerance)
        answers.append(
            AnswerResult(
                prompt=c.prompt, model=name, mode=c.mode, passed=c.passed, detail=c.detail,
                expected=c.expected, got=c.got, prefix_share=c.prefix_share, logprob_delta=c.logprob_delta,
                ttft_s=reply.ttft_s, tokens_per_s=reply.tokens_per_s, completion_tokens=reply.completion_tokens,
            )
        )  # fmt: skip
        if not c.passed:
            failed.append(f"{c.prompt!r} {c.detail}")
    how = "exact text" if exact else "tolerance"
    if not exact:
        how += f" ({_platform_difference(recorded, here) or 'as asked'})"
    if failed and result.error:
        checks.append(CheckResult(name=f"match: {name}", status="fail", detail="no answers to compare"))
    elif failed:
        checks.append(
            CheckResult(
                name=f"match: {name}", status="fail",
                detail=f"{len(failed)} of {len(expected)} answers differ ({how}): " + "; ".join(failed[:3]),
            )
        )  # fmt: skip
    else:
        checks.append(
            CheckResult(
                name=f"match: {name}",
                status="pass",
                detail=f"{len(expected)} of {len(expected)} answers match ({how})",
            )
        )
    checks.append(
        _speed_check(
            name, [r for _, r in got if r is not None and r.answer is not None], options.floors, figures
        )
    )
    return checks


def _speed_check(name: str, replies: list[Reply], floors: Floors, figures: list[ModelFigures]) -> CheckResult:
    ttfts = [r.ttft_s for r in replies if r.ttft_s is not None]
    rates = [r.tokens_per_s for r in replies if r.tokens_per_s is not None]
    figure = ModelFigures(
        model=name, answers=len(replies),
        ttft_s_median=statistics.median(ttfts) if ttfts else None, ttft_s_max=max(ttfts, default=None),
        tokens_per_s_median=statistics.median(rates) if rates else None, tokens_per_s_min=min(rates, default=None),
    )  # fmt: skip
    figures.append(figure)
    if figure.ttft_s_median is None or figure.tokens_per_s_median is None:
        return CheckResult(name=f"speed: {name}", status="fail", detail="no answer long enough to time")
    problems = []
    if figure.ttft_s_median > floors.max_ttft_s:
        problems.append(f"time to first token {figure.ttft_s_median:.2f} s above {floors.max_ttft_s:g} s")
    if figure.tokens_per_s_median < floors.min_tokens_per_s:
        problems.append(f"{figure.tokens_per_s_median:.1f} tokens/s below {floors.min_tokens_per_s:g}")
    shown = (
        f"median time to first token {figure.ttft_s_median:.3f} s, {figure.tokens_per_s_median:.1f} tokens/s"
    )
    if problems:
        return CheckResult(name=f"speed: {name}", status="fail", detail=f"{shown}: " + "; ".join(problems))
    return CheckResult(
        name=f"speed: {name}", status="pass",
        detail=f"{shown} (floors: {floors.max_ttft_s:g} s, {floors.min_tokens_per_s:g} tokens/s)",
    )  # fmt: skip


def _audit_check(log: Path, answered: int) -> CheckResult:
    from airlock.gateway.audit import rotated_files
    from airlock.gateway.audit_verify import verify

    if not log.is_file():
        return CheckResult(name="audit chain", status="fail", detail=f"the run wrote no audit log ({log})")
    report = verify([*rotated_files(log), log])
    if not report.ok:
        return CheckResult(name="audit chain", status="fail", detail=f"broken at {report.problems[0]}")
    if report.lines < answered:
        return CheckResult(
            name="audit chain", status="fail",
            detail=f"{report.lines} audit lines for {answered} answered requests: lines are missing",
        )  # fmt: skip
    end = "the end matches the head file" if report.head_checked else "no head file to check the end against"
    return CheckResult(
        name="audit chain", status="pass", detail=f"{report.lines} lines, chain whole, {end} ({log})"
    )


def _egress_check(result: RunResult) -> CheckResult:
    if not result.egress_watched:
        return CheckResult(name="no egress", status="fail", detail="not proven: the run was not watched")
    if result.egress:
        return CheckResult(name="no egress", status="fail", detail=egress_summary(result.egress))
    return CheckResult(
        name="no egress",
        status="pass",
        detail="in a loopback-only namespace: no name looked up, no packet or socket towards an outside address",
    )


def egress_summary(events: list[EgressEvent]) -> str:
    """Attempts grouped by process: ``pid 7 (python -c ...): looked up huggingface.co; reached 203.0.113.5:443``."""
    by_process: dict[tuple[int | None, str | None], dict[str, list[str]]] = {}
    for event in events:
        seen = by_process.setdefault((event.pid, event.process), {"looked up": [], "reached": []})
        verb = "looked up" if event.kind == "dns" else "reached"
        target = (
            event.destination.split(" (")[0]
            if event.kind == "dns"
            else f"{event.destination} ({event.proto})"
        )
        if target not in seen[verb]:
            seen[verb].append(target)
    parts = []
    for (pid, process), seen in by_process.items():
        who = f"pid {pid} ({process})" if pid is not None else "an unknown process"
        did = "; ".join(f"{verb} {', '.join(targets)}" for verb, targets in seen.items() if targets)
        parts.append(f"{who}: {did}")
    return f"{counted(len(by_process), 'process', 'processes')} tried to reach the outside: " + " | ".join(
        parts
    )


def load_golden_for(spec: Spec, settings: Settings, given: Path | None) -> tuple[GoldenFile, Path]:
    from airlock.accept.golden import read_golden

    path = given or default_golden(spec, settings)
    if given is None and not path.is_file():
        raise ConfigError(
            f"no golden file in the store ({path})",
            hint="carry it with the spec's files: [{path: golden.json, dest: accept/golden.json}], or give --golden",
        )
    golden = read_golden(path)
    served = {m.name for m in spec.models}
    if not any(a.model in served for a in golden.answers):
        recorded = sorted({a.model for a in golden.answers})
        raise ConfigError(
            f"{path}: no answers for any model this spec serves ({', '.join(sorted(served)) or 'none'}); "
            f"it holds answers for {', '.join(recorded[:5]) or 'no model'}",
            hint="record the golden file with the spec that is checked here",
        )
    return golden, path
