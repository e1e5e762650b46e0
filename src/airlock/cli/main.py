"""Entry point: ``airlock`` with one sub-command group per verb.

Every :class:`~airlock.errors.AirlockError` becomes one line on stderr and its exit code; the
traceback is shown only with ``--debug`` (or ``AIRLOCK_DEBUG=1``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from airlock import __version__
from airlock.cli import bench as bench_cli
from airlock.cli import bundle as bundle_cli
from airlock.cli import keys as keys_cli
from airlock.cli import plan as plan_cli
from airlock.cli import serve as serve_cli
from airlock.cli import store as store_cli
from airlock.errors import AirlockError

app = typer.Typer(
    name="airlock",
    help="Take large language models into air-gapped sites and serve them there, verified.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(keys_cli.app, name="keys")
app.add_typer(bench_cli.app, name="bench")
app.command("serve")(serve_cli.serve)
app.command("plan")(plan_cli.plan_cli)
app.command("keygen")(bundle_cli.keygen)
app.command("pack")(bundle_cli.pack_cmd)
app.command("verify")(bundle_cli.verify_cmd)
app.command("install")(bundle_cli.install_cmd)
app.command("rebuild")(bundle_cli.rebuild_cmd)
app.command("inventory")(store_cli.inventory_cmd)
app.command("ls")(store_cli.ls_cmd)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def version() -> None:
    """Print airlock's version."""
    typer.echo(__version__)


def run(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("AIRLOCK_DEBUG") == "1"
    try:
        app(args=args, prog_name="airlock")
    except AirlockError as exc:
        if debug:
            raise
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(f"[bold red]error:[/] {exc}", markup=True)
        tail = getattr(exc, "log_tail", "")
        if tail:
            err.print("[dim]--- last lines of the engine's log ---[/]")
            err.print(tail, markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
