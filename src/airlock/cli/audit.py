"""``airlock audit verify|export``: check the gateway's hash-chained audit log, or hand it to a SIEM.

``verify LOG...`` takes the active log and its rotated files in any order (``audit.jsonl*``), checks
the chain across them and names every break, first the first, by file and line: an edited line, a
removed or reordered one, a removed rotated file, a cut end (against ``LOG.head``). Exit 0 when
the chain is whole, 21 when it is broken.

``export --format syslog|cef|jsonl LOG...`` prints the lines in chain order: RFC 5424 syslog (facility
log audit, every field as structured data), ArcSight CEF, or the JSON lines as they are. It
verifies first and refuses a broken chain unless ``--force``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.markup import escape

from airlock.cli.output import err, out

if TYPE_CHECKING:
    from airlock.gateway.audit_verify import ExportFormat

app = typer.Typer(help="Verify the gateway's audit log, or export it for a SIEM.", no_args_is_help=True)

LogsArgument = Annotated[
    list[Path],
    typer.Argument(
        help="The audit log and its rotated files, in any order (e.g. audit.jsonl*).", exists=True
    ),
]


@app.command()
def verify(
    logs: LogsArgument,
    head: Annotated[
        Path | None,
        typer.Option("--head", help="The head file to check the end against (default: LOG.head)."),
    ] = None,
) -> None:
    """Check the hash chain across the files; name the first edited, removed or reordered line."""
    from airlock.common.words import counted
    from airlock.errors import AuditChainError
    from airlock.gateway.audit_verify import verify as verify_chain

    report = verify_chain(logs, head=head)
    for note in report.notes:
        err.print(f"note: {escape(note)}")
    if not report.ok:
        for problem in report.problems[1:]:
            err.print(f"  also: {escape(str(problem))}")
        first = report.problems[0]
        more = len(report.problems) - 1
        raise AuditChainError(
            f"the audit chain is broken at {first}"
            + (f" ({counted(more, 'more problem')} above)" if more else ""),
            hint="the line named was edited, removed or reordered; compare it with a copy held elsewhere (a SIEM)",
        )
    span = f"seq {report.first_seq} to {report.last_seq}" if report.first_seq is not None else "empty"
    end = (
        "; the end matches the head file"
        if report.head_checked
        else "; no head file to check the end against"
    )
    out.print(
        f"OK: {counted(len(report.files), 'file')}, {counted(report.lines, 'line')} ({span}), chain whole{end}"
    )


@app.command()
def export(
    logs: LogsArgument,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="syslog (RFC 5424), cef (ArcSight) or jsonl.")
    ] = "jsonl",
    force: Annotated[bool, typer.Option("--force", help="Export even when the chain is broken.")] = False,
) -> None:
    """Print the log in chain order for a SIEM, one event per line."""
    from airlock.errors import AuditChainError, ConfigError
    from airlock.gateway.audit_verify import export as export_lines
    from airlock.gateway.audit_verify import verify as verify_chain

    if fmt not in ("syslog", "cef", "jsonl"):
        raise ConfigError(f"--format {fmt}: not a format", hint="use syslog, cef or jsonl")
    if not force:
        report = verify_chain(logs)
        if not report.ok:
            raise AuditChainError(
                f"the audit chain is broken at {report.problems[0]}; not exported",
                hint="`airlock audit verify` lists every break; --force exports anyway",
            )
    for line in export_lines(logs, cast("ExportFormat", fmt)):
        typer.echo(line)
