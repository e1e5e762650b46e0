"""``airlock accept record|check|verify-report``: record golden answers on staging; on the
air-gapped side replay them with the network cut and write a signed report (docs/accept.md).

``check`` exits 0 when every check passes and 40 (``AcceptanceError``) when one fails; the report
is written either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape

from airlock.cli.output import STATUS_COLORS, checks_table, err, out

if TYPE_CHECKING:
    from airlock.accept.report import AcceptReport
    from airlock.settings import Settings
    from airlock.spec import Spec

app = typer.Typer(
    help="Prove a served model answers as on staging, with nothing reaching out: record, check, verify.",
    no_args_is_help=True,
)


SpecArgument = Annotated[
    Path | None,
    typer.Argument(help="The spec to serve (default: ./airlock.yaml, else the embedded default model)."),
]


def _spec(path: Path | None, settings: Settings) -> tuple[Spec, str]:
    from airlock.serving.default_model import default_spec
    from airlock.spec import load_spec

    if path is not None:
        return load_spec(path), str(path)
    if Path("airlock.yaml").is_file():
        return load_spec(Path("airlock.yaml")), "airlock.yaml"
    return default_spec(settings), "the embedded default model"


@app.command("record")
def record_cmd(
    spec: SpecArgument = None,
    prompts: Annotated[
        Path, typer.Option("--prompts", help='JSONL, one prompt a line: {"id": ..., "prompt": ...}.')
    ] = Path("golden.jsonl"),
    out_file: Annotated[Path, typer.Option("--out", help="The golden file to write.")] = Path("golden.json"),
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, max=4096, help="Tokens per answer (a prompt's own wins).")
    ] = 64,
    seed: Annotated[int, typer.Option("--seed", help="The sampling seed sent with every prompt.")] = 1234,
) -> None:
    """Serve the spec, ask each prompt greedily (temperature 0), write the answers and what gave them."""
    from airlock.accept.golden import Sampling, read_prompts
    from airlock.accept.record import RecordOptions, record
    from airlock.settings import Settings

    settings = Settings.from_env()
    served, origin = _spec(spec, settings)
    options = RecordOptions(
        spec=served, prompts=read_prompts(prompts), out=out_file,
        sampling=Sampling(max_tokens=max_tokens, seed=seed),
    )  # fmt: skip
    err.print(f"airlock: recording {escape(origin)}")
    golden = record(options, settings)
    for model in golden.models:
        out.print(
            f"{escape(model.name)}: {escape(model.digest)}, {escape(model.engine)} "
            f"{escape(model.engine_version)}, {escape(model.hardware)}"
        )
    out.print(f"wrote {len(golden.answers)} answers to {escape(str(out_file))}")
    err.print(
        "[dim]carry it in the bundle: add to the spec[/] "
        f"files: [{{path: {escape(str(out_file))}, dest: accept/golden.json}}]"
    )


@app.command("check")
def check_cmd(
    spec: SpecArgument = None,
    golden: Annotated[
        Path | None,
        typer.Option("--golden", help="The golden file (default: the store's files/accept/golden.json)."),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="The report's folder (report.json, report.html, their .sig, run/).")
    ] = Path("acceptance"),
    key: Annotated[
        Path | None,
        typer.Option(
            "--key", help="The Ed25519 key that signs the report (default: the site's signing key)."
        ),
    ] = None,
    compare_mode: Annotated[
        Literal["auto", "exact", "tolerance"],
        typer.Option(
            "--compare",
            help="auto: exact text where weights, engine, version and hardware are the recording's, "
            "else the tolerance; exact or tolerance everywhere.",
        ),
    ] = "auto",
    min_prefix_share: Annotated[
        float,
        typer.Option(
            "--min-prefix-share", min=0, max=1, help="Tolerance: share of identical leading tokens."
        ),
    ] = 0.9,
    max_logprob_delta: Annotated[
        float,
        typer.Option("--max-logprob-delta", min=0, help="Tolerance: mean log-probability distance (nats)."),
    ] = 0.5,
    max_ttft_s: Annotated[
        float, typer.Option("--max-ttft-s", min=0, help="Floor: median time to first token, seconds.")
    ] = 30.0,
    min_tokens_per_s: Annotated[
        float, typer.Option("--min-tokens-per-s", min=0, help="Floor: median tokens per second.")
    ] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Serve the installed spec with the network cut, replay the golden prompts, write a signed report."""
    from airlock.accept.check import CheckOptions, load_golden_for, run_check
    from airlock.accept.compare import Tolerance
    from airlock.accept.html import render_html
    from airlock.accept.report import Floors, write_signed
    from airlock.bundle.format.sign import load_private_key
    from airlock.errors import AcceptanceError, ConfigError
    from airlock.settings import Settings

    settings = Settings.from_env()
    served, origin = _spec(spec, settings)
    signing = key or settings.signing_key
    if not signing.is_file():
        raise ConfigError(
            f"no signing key at {signing}", hint="give --key, or make one with `airlock signing-key create`"
        )
    load_private_key(signing)  # a wrong key fails before a minute of serving
    loaded, golden_path = load_golden_for(served, settings, golden)
    options = CheckOptions(
        spec=served, spec_source=origin, golden=loaded, golden_source=str(golden_path), out=out_dir.resolve(),
        tolerance=Tolerance(min_prefix_share=min_prefix_share, max_logprob_delta=max_logprob_delta),
        exact={"auto": None, "exact": True, "tolerance": False}[compare_mode],
        floors=Floors(max_ttft_s=max_ttft_s, min_tokens_per_s=min_tokens_per_s),
    )  # fmt: skip
    err.print(f"airlock: checking {escape(origin)} against {escape(str(golden_path))}, network cut")
    report = run_check(options, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_signed(out_dir, report, render_html(report), signing)
    if as_json:
        typer.echo(report.model_dump_json(indent=1))
    else:
        render(report)
    err.print(f"report: {escape(str(out_dir / 'report.html'))} (signed; JSON beside it)")
    if report.failed:
        names = ", ".join(c.name for c in report.failed)
        raise AcceptanceError(
            f"acceptance failed: {names}", hint=f"the signed report says why: {out_dir / 'report.html'}"
        )


@app.command("verify-report")
def verify_report_cmd(
    report: Annotated[Path, typer.Argument(help="report.json (report.html beside it is checked too).")],
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            "--trust", help="A public key to trust (repeatable; default: $AIRLOCK_HOME/trusted/*.pub)."
        ),
    ] = None,
) -> None:
    """Check an acceptance report's signatures and print its outcome."""
    from airlock.accept.report import verify_report
    from airlock.settings import Settings

    parsed, signer, checked = verify_report(report, Settings.from_env().trusted_keys(trust))
    files = ", ".join(p.name for p in checked)
    out.print(
        f"OK: {escape(files)} signed by key {escape(signer)}; outcome {parsed.outcome} "
        f"({len(parsed.failed)} of {len(parsed.checks)} checks failed), created {escape(parsed.created)}"
    )


def render(report: AcceptReport) -> None:
    out.print(checks_table([(c.name, c.status, escape(c.detail)) for c in report.checks]))
    color = STATUS_COLORS[report.outcome]
    err.print(f"[{color}]{report.outcome}[/]: {len(report.failed)} of {len(report.checks)} checks failed")
