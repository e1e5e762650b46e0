"""Live progress for ``airlock bench``: one rich progress bar per load level, with running numbers.

The bar follows whichever bound is nearer (requests sent against ``--requests``, time against
``--duration``); beside it: requests done and failed, requests in flight and output tokens/s so far
(from the server's usage, as the results count them).

Imported by ``airlock bench run`` when it runs (it subclasses the runner's observer, so it loads
airlock.bench), never when the CLI starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from airlock.bench.runner import Observer

if TYPE_CHECKING:
    from rich.console import Console

    from airlock.bench.client import RequestRecord
    from airlock.bench.options import Load
    from airlock.bench.results import LevelResult


@dataclass
class _Level:
    task: TaskID
    requests: int | None
    duration_s: float | None
    done: int = 0
    failed: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    in_flight: int = 0

    def fraction(self) -> float:
        parts = []
        if self.requests:
            parts.append(self.done / self.requests)
        if self.duration_s:
            parts.append(self.elapsed_s / self.duration_s)
        return min(1.0, max(parts, default=0.0))

    def status(self) -> str:
        rate = self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0
        failed = f"[red]{self.failed} failed[/]" if self.failed else "0 failed"
        return f"{self.done} done, {failed}, {self.in_flight} in flight, {rate:,.0f} tok/s"


class LiveProgress(Observer):
    """An :class:`~airlock.bench.runner.Observer` that draws on a rich console (stderr)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:>12}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self.levels: dict[int, _Level] = {}

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def phase(self, text: str) -> None:
        self.progress.console.print(f"[dim]{text}…[/]")

    def warning(self, text: str) -> None:
        self.progress.console.print(f"[yellow]warning:[/] {text}")

    def level_started(self, index: int, load: Load, requests: int | None, duration_s: float | None) -> None:
        task = self.progress.add_task(load.label, total=1000, status="starting")
        self.levels[index] = _Level(task, requests, duration_s)

    def _update(self, index: int) -> None:
        level = self.levels[index]
        self.progress.update(level.task, completed=1000 * level.fraction(), status=level.status())

    def request_done(self, index: int, record: RequestRecord) -> None:
        level = self.levels[index]
        level.done += 1
        level.failed += not record.ok
        level.tokens += record.output_tokens or 0
        self._update(index)

    def tick(self, index: int, elapsed_s: float, in_flight: int) -> None:
        level = self.levels[index]
        level.elapsed_s, level.in_flight = elapsed_s, in_flight
        self._update(index)

    def level_done(self, index: int, result: LevelResult) -> None:
        level = self.levels[index]
        failed = f"[red]{result.failed} failed[/]" if result.failed else "0 failed"
        status = (
            f"{result.ok} ok, {failed}, {result.output_throughput:,.1f} tok/s over {result.duration_s:.1f} s"
        )
        self.progress.update(level.task, completed=1000, status=status)
