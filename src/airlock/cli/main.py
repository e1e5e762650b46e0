"""Entry point: ``airlock`` with one sub-command group per verb.

Every :class:`~airlock.errors.AirlockError` becomes one line on stderr and its exit code; the
traceback is shown only with ``--debug`` (or ``AIRLOCK_DEBUG=1``).

Start-up stays light (``airlock --help`` in about 0.2 s, mostly typer's own, rather than 1.5 s): the
command modules imported here import the core (serving, bench, bundle, plan and their numpy,
aiohttp, uvicorn, cryptography) inside their command functions; tests/unit/cli/test_startup.py
checks it.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Annotated, Any

import typer

from airlock import __version__
from airlock.cli import bench as bench_cli
from airlock.cli import bundle as bundle_cli
from airlock.cli import keys as keys_cli
from airlock.cli import plan as plan_cli
from airlock.cli import serve as serve_cli
from airlock.cli import store as store_cli
from airlock.cli.output import err
from airlock.errors import AirlockError

app = typer.Typer(
    name="airlock",
    help="Take large language models into air-gapped sites and serve them there, verified.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
signing_key_app = typer.Typer(
    help="Make the Ed25519 key that signs bundles (API keys for the gateway: `airlock keys`).",
    no_args_is_help=True,
)
signing_key_app.command("create")(bundle_cli.keygen)

app.add_typer(keys_cli.app, name="keys")
app.add_typer(signing_key_app, name="signing-key")
app.add_typer(bench_cli.app, name="bench")
app.command("serve")(serve_cli.serve)
app.command("plan")(plan_cli.plan_cli)
app.command("pack")(bundle_cli.pack_cmd)
app.command("verify")(bundle_cli.verify_cmd)
app.command("install")(bundle_cli.install_cmd)
app.command("rebuild")(bundle_cli.rebuild_cmd)
app.command("inventory")(store_cli.inventory_cmd)
app.command("ls")(store_cli.ls_cmd)

KEYGEN_RENAMED = "`airlock keygen` is now `airlock signing-key create`; the old name goes in the next release"


@functools.wraps(bundle_cli.keygen)  # the same options: typer reads them through __wrapped__
def _keygen_old_name(*args: Any, **kwargs: Any) -> None:
    """``signing-key create``'s old name (beside ``keys`` it read as API keys): warns, then does the same."""
    err.print(KEYGEN_RENAMED, markup=False)
    bundle_cli.keygen(*args, **kwargs)


app.command("keygen", hidden=True, help="Old name of `airlock signing-key create`.")(_keygen_old_name)


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
