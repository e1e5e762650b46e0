"""The CLI's two consoles, named for where they write: ``out`` (stdout: results, tables, data a user
may pipe) and ``err`` (stderr: progress, warnings, errors, hints). Every CLI module uses these two
names; no module makes its own :class:`~rich.console.Console` for the same streams.

Both soft-wrap: a long line (a command, a path, a key) is printed whole and left to the terminal,
never broken with a real newline that would break a copy and paste. Tables still fit the width.
Emoji codes are off, so ``h100-80gb:x:`` stays as typed. Text from the user or the disk must still
be escaped (``rich.markup.escape``) or printed with ``markup=False``.

Example::

    from rich.markup import escape
    from airlock.cli.output import err, out
    out.print(table)
    err.print(f"[yellow]warning:[/] no signing key at {escape(str(path))}")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from collections.abc import Iterable

    from rich.table import Table

#: the colour of each outcome a check can have (doctor, accept)
STATUS_COLORS = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}

out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def checks_table(rows: Iterable[tuple[str, str, str]]) -> Table:
    """A table of checks, one row ``(name, status, detail)`` each; ``detail`` is rich markup already
    (escape what came from the user or the disk), ``name`` is escaped here."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for name, status, detail in rows:
        table.add_row(escape(name), f"[{STATUS_COLORS[status]}]{status}[/]", detail)
    return table
