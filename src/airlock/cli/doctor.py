"""``airlock doctor [SPEC]``: check this host before anything starts (GPUs, driver against the images,
container runtime and NVIDIA toolkit, /dev/shm, disk, the gateway's port, the store, the clock, and
that no route leads out), one line per check with its fix; ``--json`` for automation.

The exit code is the worst result: 0 when every check passes (or was skipped), 30 when one warns,
31 when one fails (docs/doctor.md). A bad flag or spec is a usage error as for any verb.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from airlock.cli.output import STATUS_COLORS, checks_table, err, out

if TYPE_CHECKING:
    from airlock.doctor.model import DoctorReport


def doctor(
    spec: Annotated[
        Path | None,
        typer.Argument(help="The airlock.yaml to check the host against (its GPUs, engines, gateway port)."),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store", help="The model store (default: the spec's store:, else $AIRLOCK_HOME/store)."
        ),
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle", help="A bundle (or one of its volumes) about to be installed: is there room?"
        ),
    ] = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="Hash every file of the store (slow) instead of checking sizes.")
    ] = False,
    site_network: Annotated[
        list[str] | None,
        typer.Option(
            "--site-network",
            help="A network of the site (CIDR, repeatable): routes to it are not routes out.",
        ),
    ] = None,
    probe: Annotated[
        list[str] | None,
        typer.Option(
            "--probe",
            help="HOST:PORT (an IP address) to try one TCP connection to, to prove it unreachable (repeatable).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check this host before serving: each check passes, warns or fails, with the fix."""
    from airlock.doctor.model import DoctorOptions
    from airlock.doctor.run import run_doctor

    options = DoctorOptions(
        spec=spec,
        store=store,
        bundle=bundle,
        deep=deep,
        site_networks=tuple(site_network or ()),
        probes=tuple(probe or ()),
    )
    report = run_doctor(options)
    if as_json:
        typer.echo(report.to_json())
    else:
        render(report)
    raise typer.Exit(report.exit_code)


def render(report: DoctorReport) -> None:
    """The checks as a table, the fix under each one that warns or fails; a summary line on stderr."""
    rows = []
    for check in report.checks:
        detail = escape(check.detail)
        if check.fix and check.status in ("warn", "fail"):
            detail += f"\n[{STATUS_COLORS[check.status]}]fix:[/] {escape(check.fix)}"
        rows.append((check.name, check.status, detail))
    out.print(checks_table(rows))
    counts = report.counts()
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    color = STATUS_COLORS[report.worst]
    err.print(f"[{color}]{report.worst}[/]: {escape(summary)} (exit {report.exit_code})")
