"""``airlock keys create|list|revoke``: API keys for the gateway.

``create --models`` names the models a key may use; they are checked against the spec that serve
will read (``--config``, else ./airlock.yaml), so a typo is refused rather than making a key that
opens nothing. Without a spec the names are compared with the embedded default model's and only
warned about: the gateway's models are not known yet.

The key store and the settings are imported when a command runs, not when the CLI starts.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from airlock.cli.output import err, out
from airlock.errors import ConfigError

if TYPE_CHECKING:
    from airlock.gateway.apikeys import KeyStore

app = typer.Typer(help="Create, list and revoke the gateway's API keys.", no_args_is_help=True)


def _store() -> KeyStore:
    from airlock.gateway.apikeys import KeyStore
    from airlock.settings import Settings

    return KeyStore(Settings.from_env().keys_db)


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def parse_models(value: str | None) -> list[str] | None:
    """``--models a,b`` as a list; None (no flag) is every model; an empty list or name is an error."""
    if value is None:
        return None
    names = [m.strip() for m in value.split(",")]
    if not any(names):
        raise ConfigError(
            "--models is empty", hint="name at least one model, or leave --models out for every model"
        )
    if not all(names):
        raise ConfigError(f"--models {value!r} has an empty name", hint="separate names with single commas")
    return names


def check_against_spec(models: list[str], config: Path | None) -> None:
    """Refuse names the spec's gateway will not offer; without a spec, warn that they are unchecked."""
    from airlock.gateway.apikeys import check_models
    from airlock.spec import load_spec

    spec_path = config if config is not None else Path("airlock.yaml")
    if config is not None or spec_path.is_file():
        spec = load_spec(spec_path)
        check_models(models, [name for model in spec.models for name in model.names])
        return
    from airlock.serving.default_model import DEFAULT_MODEL_ALIASES, DEFAULT_MODEL_NAME

    default_names = (DEFAULT_MODEL_NAME, *DEFAULT_MODEL_ALIASES)
    unchecked = [m for m in models if m not in default_names]
    if unchecked:
        err.print(
            f"[yellow]warning:[/] no airlock.yaml here, so {escape(', '.join(unchecked))} cannot be checked "
            f"(give the spec with --config; without one, serve offers {escape(', '.join(default_names))})"
        )


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for, e.g. 'alice' or 'ci'.")],
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated models it may use (default: all).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="The spec whose models --models names (default: ./airlock.yaml)."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the key (for scripts).")] = False,
) -> None:
    """Create a key. It is shown once; only its hash is stored."""
    allowed = parse_models(models)
    if allowed is not None:
        check_against_spec(allowed, config)
    key, token = _store().create(name, allowed)
    if quiet:
        typer.echo(token)
        return
    scope = ", ".join(key.models) if key.models else "all models"
    out.print(
        f"Created key [bold]{escape(key.name)}[/] ({escape(scope)}). Store it now; it is not shown again:"
    )
    out.print(token, markup=False)


@app.command("list")
def list_(all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False) -> None:
    """List keys (names and ids, never the secrets)."""
    from rich.table import Table

    rows = _store().list(include_revoked=all_)
    table = Table("name", "id", "models", "created", "revoked")
    for key in rows:
        table.add_row(
            escape(key.name),
            key.key_id,
            escape(", ".join(key.models)) if key.models else "all",
            _when(key.created_at),
            _when(key.revoked_at),
        )
    out.print(table)


@app.command()
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key; a running gateway refuses it within a second."""
    key = _store().revoke(name)
    out.print(f"Revoked key [bold]{escape(key.name)}[/] ({key.key_id}).")
