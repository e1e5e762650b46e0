"""Entry point: ``airlock`` with one sub-command group per verb.

Every :class:`~airlock.errors.AirlockError` becomes one line on stderr and its exit code; the
traceback is shown only with ``--debug`` (or ``AIRLOCK_DEBUG=1``). A usage error (an unknown option,
a missing argument, a bad value) is one line too, with the command's ``--help`` as the next step.
Log records reach the user as ``warning: ...`` lines; the timestamped log format, and INFO and DEBUG
records, only with ``--debug``.

Help reads as a newcomer expects on an 80-column terminal: ``--out PATH``, ``--workers INTEGER``,
``--parity 0-100``, flags without a type, ``Usage: airlock pack [OPTIONS] SPEC``. :class:`AirlockGroup`
rewrites every command's parameters once when the tree is built, so each command module gets this
without doing anything.

Start-up stays light (``airlock --help`` in about 0.2 s, mostly typer's own, rather than 1.5 s): the
command modules imported here import the core (serving, bench, bundle, plan and their numpy,
aiohttp, uvicorn, cryptography) inside their command functions; tests/unit/cli/test_startup.py
checks it.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from airlock import __version__
from airlock.cli import accept as accept_cli
from airlock.cli import audit as audit_cli
from airlock.cli import bench as bench_cli
from airlock.cli import bundle as bundle_cli
from airlock.cli import deploy as deploy_cli
from airlock.cli import doctor as doctor_cli
from airlock.cli import image as image_cli
from airlock.cli import keys as keys_cli
from airlock.cli import plan as plan_cli
from airlock.cli import serve as serve_cli
from airlock.cli import spec as spec_cli
from airlock.cli import store as store_cli
from airlock.cli.output import err
from airlock.errors import AirlockError

_TYPE_NAMES: dict[Any, str] = {
    int: "INTEGER",
    float: "NUMBER",
    str: "TEXT",
    bool: "BOOLEAN",
    Path: "PATH",
    dt.datetime: "DATETIME",
}


def _number(value: float) -> str:
    return f"{value:g}"


def type_label(param: TyperOption | TyperArgument) -> str:
    """What a parameter's value looks like, in words: PATH, INTEGER, ``none|zstd|auto``, ``0-100``.

    Replaces typer's ``<bool>``, ``<list[Path]>`` and ``<float range> [0<=x<=100]``. A flag has none.
    """
    if isinstance(param, TyperOption) and (param.is_flag or param.count):
        return ""
    desc = param.type_descriptor
    choices = desc.choices
    if choices:
        return "|".join(str(getattr(c, "value", c)) for c in choices)
    annotation = desc.annotation
    if desc.is_list and get_args(annotation):
        annotation = get_args(annotation)[0]
    name = "PATH" if desc.is_path else _TYPE_NAMES.get(annotation, "TEXT")
    low, high = param.min, param.max
    if low is not None and high is not None:
        return f"{_number(low)}-{_number(high)}"
    if low is not None:
        return f"{name} >= {_number(low)}"
    if high is not None:
        return f"{name} <= {_number(high)}"
    return name


def _plain_parameter(param: Any) -> None:
    """Give one parameter click's plain spelling in help and usage (set on the instance)."""
    if not isinstance(param, TyperOption | TyperArgument):
        return
    label = type_label(param)
    setattr(param, "_get_number_range_help_str", lambda: None)  # noqa: B010  # the range is in the label
    if isinstance(param, TyperOption):
        param.metavar = label
        return
    name = (param.metavar or param.name or "ARG").upper()
    param.metavar = name
    shown = name if param.required else f"[{name}]"
    shown += "..." if param.nargs != 1 else ""
    setattr(param, "get_usage_pieces", lambda ctx: [shown])  # noqa: B010
    setattr(param, "display_type_rich", lambda ctx: label)  # noqa: B010


def _plain_tree(command: Any) -> None:
    for param in getattr(command, "params", ()):
        _plain_parameter(param)
    _plain_parameter(command.get_help_option(typer.Context(command)))  # made on demand, then kept
    for sub in getattr(command, "commands", {}).values():
        _plain_tree(sub)


def _fold_long_words() -> None:
    """Option help never loses its end: a word longer than the help column (a path, ``a=1,b=2``)
    folds onto the next line instead of ending in an ellipsis."""
    from rich.text import Text
    from typer import rich_utils

    original = rich_utils._get_parameter_help
    if getattr(original, "folds", False):
        return

    @functools.wraps(original)
    def folded(**kwargs: Any) -> Any:
        columns = original(**kwargs)
        for item in columns.renderables:
            if isinstance(item, Text):
                item.overflow = "fold"
        return columns

    setattr(folded, "folds", True)  # noqa: B010
    setattr(rich_utils, "_get_parameter_help", folded)  # noqa: B010 (mypy: no assigning to a module function)


def _fold_when_help_is_shown() -> None:
    """Install :func:`_fold_long_words` on the way into help only: typer's rich help module costs
    ~60 ms to import, which a command that shows no help (``airlock version``) should not pay."""
    for cls in (TyperCommand, TyperGroup):
        original = cls.format_help
        if getattr(original, "folds", False):
            continue

        def format_help(self: Any, ctx: Any, formatter: Any, _original: Any = original) -> Any:
            _fold_long_words()
            return _original(self, ctx, formatter)

        setattr(format_help, "folds", True)  # noqa: B010
        setattr(cls, "format_help", format_help)  # noqa: B010


class AirlockGroup(TyperGroup):
    """The root group: plain parameter names in help, and a click usage error as one line."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _plain_tree(self)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        _fold_when_help_is_shown()
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.TyperException as exc:
            usage_error(exc)
            sys.exit(getattr(exc, "exit_code", 2))
        except typer.Abort:
            err.print("aborted", markup=False)
            sys.exit(1)
        # without standalone mode a typer.Exit comes back as its code; a command returns None
        sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


def usage_error(exc: typer.TyperException) -> None:
    """A click usage error as one line: ``error: No such option: --verison (see `airlock --help`)``."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed
        return
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    message = " ".join(exc.format_message().split())
    # typer checks values with pydantic: "Input should be a valid integer, unable to parse string ..."
    message = re.sub(r"Input should be ([^,]*)(, unable to [^.(]*)?", r"must be \1", message)
    err.print(f"[bold red]error:[/] {escape(message)}{escape(where)}", emoji=False)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


app = typer.Typer(
    name="airlock",
    cls=AirlockGroup,
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
app.add_typer(audit_cli.app, name="audit")
app.add_typer(spec_cli.app, name="spec")
app.add_typer(image_cli.app, name="image")
app.add_typer(deploy_cli.app, name="deploy")
app.add_typer(accept_cli.app, name="accept")
app.command("serve")(serve_cli.serve)
app.command("plan")(plan_cli.plan_cli)
app.command("pack")(bundle_cli.pack_cmd)
app.command("verify")(bundle_cli.verify_cmd)
app.command("install")(bundle_cli.install_cmd)
app.command("rebuild")(bundle_cli.rebuild_cmd)
app.command("inventory")(store_cli.inventory_cmd)
app.command("ls")(store_cli.ls_cmd)
app.command("doctor")(doctor_cli.doctor)

KEYGEN_RENAMED = "`airlock keygen` is now `airlock signing-key create`; the old name goes in the next release"


@functools.wraps(bundle_cli.keygen)  # the same options: typer reads them through __wrapped__
def _keygen_old_name(*args: Any, **kwargs: Any) -> None:
    """``signing-key create``'s old name (beside ``keys`` it read as API keys): warns, then does the same."""
    err.print(KEYGEN_RENAMED, markup=False)
    bundle_cli.keygen(*args, **kwargs)


app.command("keygen", hidden=True, help="Old name of `airlock signing-key create`.")(_keygen_old_name)


class _UserLines(logging.Handler):
    """Log records as lines a user reads (``warning: ...``), on stderr, never read as markup."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            err.print(f"{record.levelname.lower()}: {record.getMessage()}", markup=False, emoji=False)
        except Exception:  # a broken stderr must not raise from logging
            self.handleError(record)


def setup_logging(debug: bool) -> None:
    """With ``--debug``: every record, timestamped, in log format. Without: warnings and errors only,
    each as ``warning: message``. Does nothing where logging is already set up (under pytest)."""
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=logging.WARNING, handlers=[_UserLines()])


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print airlock's version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    setup_logging(debug)


@app.command()
def version() -> None:
    """Print airlock's version."""
    typer.echo(__version__)


def error_lines(exc: AirlockError) -> list[str]:
    """What an AirlockError prints: one line, ``error: message (hint)``; where the message holds one
    problem per line (a spec's), ``error:`` before each and the hint on a line of its own. Markup is
    for the prefix only: the message and hint, which quote the user's input, are escaped."""
    problems = exc.message.splitlines() or [""]
    if len(problems) == 1:
        return [f"[bold red]error:[/] {escape(str(exc))}"]
    lines = [f"[bold red]error:[/] {escape(problem)}" for problem in problems]
    return lines + ([f"[dim]hint:[/] {escape(exc.hint)}"] if exc.hint else [])


def run(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("AIRLOCK_DEBUG") == "1"
    try:
        app(args=args, prog_name="airlock")
    except AirlockError as exc:
        if debug:
            raise
        for line in error_lines(exc):
            err.print(line, emoji=False)
        tail = getattr(exc, "log_tail", "")
        if tail:
            err.print("[dim]--- last lines of the engine's log ---[/]")
            err.print(tail, markup=False, emoji=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
