"""The CLI's two consoles, named for where they write: ``out`` (stdout: results, tables, data a user
may pipe) and ``err`` (stderr: progress, warnings, errors, hints). Every CLI module uses these two
names; no module makes its own :class:`~rich.console.Console` for the same streams.

Example::

    from airlock.cli.output import err, out
    out.print(table)
    err.print("[yellow]warning:[/] no signing key")
"""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)
