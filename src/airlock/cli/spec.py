"""``airlock spec check|schema``: check an airlock.yaml, or publish its JSON Schema for editors.

``check`` reports every problem of a spec at once, one line each with file, line and column
(``airlock.yaml:7:30: models[0].engine.paralel: unknown key 'paralel'; did you mean 'parallel'?``).
``schema`` prints the JSON Schema that editors validate airlock.yaml against as it is typed; with the
YAML language server (VS Code's YAML extension, vim/neovim LSP clients)::

    airlock spec schema --out airlock.schema.json
    # first line of airlock.yaml:
    # yaml-language-server: $schema=airlock.schema.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from airlock.cli.output import err, out

app = typer.Typer(help="Check an airlock.yaml, or print its JSON Schema for editors.", no_args_is_help=True)


@app.command()
def check(
    file: Annotated[Path, typer.Argument(help="The spec to check.")] = Path("airlock.yaml"),
) -> None:
    """Validate a spec: 'OK' and what it holds, or every problem with its line and column."""
    from airlock.common.words import counted
    from airlock.spec import load_spec

    spec = load_spec(file)
    names = ", ".join(model.name for model in spec.models) or "none"
    gateway = f"{spec.gateway.host}:{spec.gateway.port}"
    count = counted(len(spec.models), "model")
    out.print(f"{escape(str(file))}: OK ({count}: {escape(names)}; gateway {escape(gateway)})")


@app.command()
def schema(
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write it to this file (default: print it).")
    ] = None,
) -> None:
    """Print the spec's JSON Schema (draft 2020-12), for editors that check airlock.yaml as you type."""
    from airlock.common.fileio import write_atomic
    from airlock.spec import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    write_atomic(output, text.encode())
    err.print(f"wrote {escape(str(output))}; to use it, start airlock.yaml with:")
    out.print(f"# yaml-language-server: $schema={escape(str(output))}")
