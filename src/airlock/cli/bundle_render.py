"""Rendering for the bundle verbs: rich progress bars and tables (the core returns data only)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from airlock.common.fileio import human

if TYPE_CHECKING:
    from rich.console import Console

    from airlock.bundle.airgap.verify import VerifyReport

PHASES = {
    "hash": "hashing",
    "compress": "compressing",
    "write": "writing volumes",
    "parity": "parity",
    "verify": "verifying",
    "install": "installing",
    "rebuild": "rebuilding",
}


class RichProgress:
    """A :class:`~airlock.common.progress.ProgressSink` drawing one bar per phase."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, phase: str, total: int) -> None:
        if total <= 0:
            return
        self.tasks[phase] = self.progress.add_task(PHASES.get(phase, phase), total=total)

    def advance(self, phase: str, n: int) -> None:
        task = self.tasks.get(phase)
        if task is not None:
            self.progress.advance(task, n)

    def finish(self, phase: str) -> None:
        task = self.tasks.pop(phase, None)
        if task is not None:
            self.progress.refresh()


def verify_table(report: VerifyReport) -> Table:
    table = Table("volume", "role", "state", "where", title=f"bundle {report.bundle[:16]}")
    bad: dict[int, int] = {}
    for p in report.problems:
        if p.volume is not None and p.kind != "missing_volume":
            bad[p.volume] = bad.get(p.volume, 0) + 1
    for volume in report.manifest.volumes:
        where: Path | None = report.present.get(volume.number)
        if where is None:
            state = "[yellow]missing[/]"
        elif volume.number in bad:
            state = f"[red]{bad[volume.number]} problem(s)[/]"
        else:
            state = "[green]ok[/]"
        table.add_row(str(volume.number), volume.role, state, str(where) if where else "-")
    return table


def rate(nbytes: int, seconds: float) -> str:
    return f"{human(nbytes)} in {seconds:.1f} s ({human(nbytes / seconds) if seconds > 0 else '-'}/s)"
