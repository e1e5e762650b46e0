"""Rendering for the bundle verbs: progress bars, volume lines, pasteable commands (the core returns data only)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from airlock.common.fileio import human
from airlock.common.words import counted

if TYPE_CHECKING:
    from rich.console import Console

    from airlock.bundle.airgap.verify import VerifyReport
    from airlock.bundle.format.manifest import Bootstrap, ImageInfo

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


PROBLEM_WORDS = {
    "unsafe_path": "unsafe path",
    "corrupt": "corrupt",
    "unlisted": "unlisted file",
    "missing_volume": "missing volume",
}


def shell_quote(arg: str) -> str:
    """``arg`` as a shell reads it back (quoted only when it needs to be), for commands printed to paste."""
    import shlex

    return shlex.quote(arg)


def command(*args: str | Path) -> str:
    """A command line to paste, its arguments quoted for the shell and escaped for rich markup."""
    return escape(" ".join(shell_quote(str(a)) for a in args))


def trust_args(trust: list[Path] | None, allow_unsigned: bool) -> list[str | Path]:
    """The trust flags a command was given, to repeat in the command it suggests next."""
    args: list[str | Path] = []
    for key in trust or ():
        args += ["--trust", key]
    if allow_unsigned:
        args.append("--allow-unsigned")
    return args


def volume_states(report: VerifyReport) -> list[tuple[int, str, str, Path | None]]:
    """Per volume of the set: its number, role, state (ok, missing, N problems) and where it is mounted."""
    bad: dict[int, int] = {}
    for p in report.problems:
        if p.volume is not None and p.kind != "missing_volume":
            bad[p.volume] = bad.get(p.volume, 0) + 1
    rows: list[tuple[int, str, str, Path | None]] = []
    for volume in report.manifest.volumes:
        where = report.present.get(volume.number)
        if where is None:
            state = "missing"
        elif volume.number in bad:
            state = counted(bad[volume.number], "problem")
        else:
            state = "ok"
        rows.append((volume.number, volume.role, state, where))
    return rows


def verify_lines(report: VerifyReport) -> list[str]:
    """The bundle, then one line per volume (never a table: a path must print whole, to copy)."""
    colour = {"ok": "green", "missing": "yellow"}
    lines = [f"bundle {report.bundle[:16]}: {counted(len(report.manifest.volumes), 'volume')}"]
    for number, role, state, where in volume_states(report):
        shown = f"[{colour.get(state, 'red')}]{state:<10}[/]"
        lines.append(f"  volume {number:<3} {role:<6}  {shown}  {escape(str(where)) if where else '-'}")
    return lines


def rate(nbytes: int, seconds: float) -> str:
    return f"{human(nbytes)} in {seconds:.1f} s ({human(nbytes / seconds) if seconds > 0 else '-'}/s)"


def image_line(image: ImageInfo) -> str:
    """One image as pack and ls show it: reference, digest, platform, size, CUDA requirement."""
    cuda = (
        f", needs {image.nvidia_require_cuda or 'CUDA ' + image.cuda_version}" if image.cuda_version else ""
    )
    index = f" (from index {image.index_digest[:19]})" if image.index_digest else ""
    return (
        f"[bold]{escape(image.reference)}[/] {image.digest[:19]}{index} {image.platform}, "
        f"{human(image.size)}{escape(cuda)}"
    )


def bootstrap_lines(boot: Bootstrap, first: Path) -> list[str]:
    """What pack prints of the bootstrap folder: where it is, the SHA256SUMS hash to compare, what to run."""
    from airlock.bundle.format import layout

    folder = first / layout.BOOTSTRAP_DIR
    wheels = sum(1 for f in boot.files if f.path.endswith(".whl"))
    sums = folder / layout.BOOTSTRAP_SUMS
    return [
        f"  airlock {escape(boot.airlock_version)} to bootstrap the other side: {escape(str(folder))}/ "
        f"({counted(wheels, 'wheel')} for {escape(boot.target)})",
        f"  [bold]SHA-256 of {layout.BOOTSTRAP_SUMS}: {boot.sums_sha256}[/]",
        f"  [dim]there: {command('sha256sum', sums)} (compare), then {command('sh', folder / layout.BOOTSTRAP_SCRIPT)}[/]",
    ]
