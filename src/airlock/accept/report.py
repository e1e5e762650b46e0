"""The acceptance report: JSON for machines, a self-contained HTML page for the change board, each
signed with the site's Ed25519 key in the bundles' signature format (:mod:`airlock.bundle.format.sign`)
under its own context, so a report's signature can never pass for a manifest's.

    OUT/report.json       OUT/report.json.sig
    OUT/report.html       OUT/report.html.sig

``airlock accept verify-report OUT/report.json --trust KEY.pub`` checks both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import Field, ValidationError

from airlock.accept.egress import EgressEvent
from airlock.accept.golden import ModelRecord, problems
from airlock.common.fileio import write_atomic
from airlock.common.types import FrozenModel
from airlock.errors import ConfigError, SignatureError

REPORT_CONTEXT: Final = "airlock acceptance report v1"
REPORT_JSON: Final = "report.json"
REPORT_HTML: Final = "report.html"
SIG_SUFFIX: Final = ".sig"

Status = Literal["pass", "fail", "skip"]


class CheckResult(FrozenModel):
    name: str  # e.g. "answers match: smollm2-135m-instruct", "no egress"
    status: Status
    detail: str


class AnswerResult(FrozenModel):
    prompt: str
    model: str
    mode: Literal["exact", "tolerance", "none"]
    passed: bool
    detail: str
    expected: str
    got: str | None
    prefix_share: float | None = None
    logprob_delta: float | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    completion_tokens: int = 0


class ModelFigures(FrozenModel):
    model: str
    answers: int
    ttft_s_median: float | None
    ttft_s_max: float | None
    tokens_per_s_median: float | None
    tokens_per_s_min: float | None


class Floors(FrozenModel):
    max_ttft_s: float
    min_tokens_per_s: float


class AcceptReport(FrozenModel):
    version: Literal[1] = 1
    created: str
    airlock_version: str
    outcome: Literal["pass", "fail"]
    spec: str
    golden: str
    golden_created: str
    comparison: str  # the rule in words: exact, or the tolerance
    floors: Floors
    recorded: list[ModelRecord]  # as the golden file names them
    here: list[ModelRecord]  # what answered this time
    checks: list[CheckResult]
    answers: list[AnswerResult] = Field(default_factory=list)
    figures: list[ModelFigures] = Field(default_factory=list)
    egress: list[EgressEvent] = Field(default_factory=list)
    dns_lookups: int = 0

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]


def write_signed(out: Path, report: AcceptReport, html: str, key: Path) -> list[Path]:
    """Write the report's JSON and HTML into ``out``, each with its signature; return the four paths."""
    from airlock.bundle.format.sign import load_private_key, sign

    private = load_private_key(key)
    written: list[Path] = []
    for name, data in (
        (REPORT_JSON, report.model_dump_json(indent=1).encode() + b"\n"),
        (REPORT_HTML, html.encode()),
    ):
        path = out / name
        write_atomic(path, data)
        write_atomic(path.with_name(name + SIG_SUFFIX), sign(private, data, REPORT_CONTEXT))
        written += [path, path.with_name(name + SIG_SUFFIX)]
    return written


def verify_report(report: Path, trusted: list[Path]) -> tuple[AcceptReport, str, list[Path]]:
    """Check ``report`` (``report.json``) and, where it lies beside it, ``report.html`` against the
    trusted public keys; return the report, the signing key's id and the files checked."""
    from airlock.bundle.format.sign import load_public_key, verify

    if not report.is_file():
        raise ConfigError(f"{report}: no such report", hint="give the report.json that `accept check` wrote")
    keys = [load_public_key(p) for p in trusted]
    checked: list[Path] = []
    signer = ""
    signed_json = b""
    for path in (report, report.with_name(REPORT_HTML)):
        if path in checked or (path != report and not path.exists()):
            continue
        sig = path.with_name(path.name + SIG_SUFFIX)
        try:
            data, signature = path.read_bytes(), sig.read_bytes()
        except OSError as exc:
            raise SignatureError(f"{exc.filename}: cannot read it: {exc.strerror}") from exc
        signer = verify(keys, data, signature, REPORT_CONTEXT, source=str(path))
        checked.append(path)
        if path == report:
            signed_json = data
    try:  # the bytes whose signature was checked, not the file read again
        parsed = AcceptReport.model_validate_json(signed_json)
    except ValidationError as exc:
        raise ConfigError(f"{report}: signed, but not an acceptance report ({problems(exc)})") from exc
    return parsed, signer, checked
