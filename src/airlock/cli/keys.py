"""``airlock keys create|list|revoke``: API keys for the gateway.

The key store and the settings are imported when a command runs, not when the CLI starts.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated

import typer

from airlock.cli.output import out

if TYPE_CHECKING:
    from airlock.gateway.apikeys import KeyStore

app = typer.Typer(help="Create, list and revoke the gateway's API keys.", no_args_is_help=True)


def _store() -> KeyStore:
    from airlock.gateway.apikeys import KeyStore
    from airlock.settings import Settings

    return KeyStore(Settings.from_env().keys_db)


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


@app.command()
def create(
    name: str = typer.Argument(..., help="Who or what the key is for, e.g. 'alice' or 'ci'."),
    models: str | None = typer.Option(
        None, "--models", help="Comma-separated models it may use (default: all)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the key (for scripts)."),
) -> None:
    """Create a key. It is shown once; only its hash is stored."""
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None
    key, token = _store().create(name, allowed)
    if quiet:
        typer.echo(token)
        return
    scope = ", ".join(key.models) if key.models else "all models"
    out.print(f"Created key [bold]{key.name}[/] ({scope}). Store it now; it is not shown again:")
    out.print(token, markup=False, soft_wrap=True)


@app.command("list")
def list_(all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False) -> None:
    """List keys (names and ids, never the secrets)."""
    from rich.table import Table

    rows = _store().list(include_revoked=all_)
    table = Table("name", "id", "models", "created", "revoked")
    for key in rows:
        table.add_row(
            key.name,
            key.key_id,
            ", ".join(key.models) if key.models else "all",
            _when(key.created_at),
            _when(key.revoked_at),
        )
    out.print(table)


@app.command()
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key; a running gateway refuses it within a second."""
    key = _store().revoke(name)
    out.print(f"Revoked key [bold]{key.name}[/] ({key.key_id}).")
