"""``airlock ls`` and ``airlock inventory``: what the model store holds.

The store and bundle code is imported inside each command, so ``airlock --help`` does not load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from airlock.cli.output import out
from airlock.settings import Settings

StoreOpt = Annotated[
    Path | None, typer.Option("--store", help="The model store (default: $AIRLOCK_HOME/store).")
]


def ls_cmd(
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the store's index as JSON.")] = False,
) -> None:
    """List the models, wheels and files in the store."""
    from rich.table import Table

    from airlock.common.fileio import human
    from airlock.store.store import Store

    s = Store(store or Settings.from_env().store)
    db = s.load_db()
    if as_json:
        typer.echo(db.model_dump_json(indent=2))
        return
    table = Table("model", "repo", "commit", "files", "size", "source", "license", title=f"store {s.root}")
    for m in sorted(db.models, key=lambda m: (m.repo, m.installed)):
        table.add_row(
            m.name,
            m.repo,
            m.commit[:12],
            str(len(m.files)),
            human(sum(f.size for f in m.files)),
            m.source,
            m.license or "-",
        )
    out.print(table)
    if db.wheels:
        out.print(f"{len(db.wheels)} wheels ({human(sum(w.size for w in db.wheels))}) in {s.root}/wheels")
    if db.files:
        out.print(f"{len(db.files)} files in {s.root}/files: " + ", ".join(f.path for f in db.files[:5]))
    if not (db.models or db.wheels or db.files):
        out.print("[dim]the store is empty: `airlock install DIR` fills it[/]")


def inventory_cmd(
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Where to write the inventory (JSON).")],
    store: StoreOpt = None,
    sign_key: Annotated[
        Path | None,
        typer.Option("--sign", help="Private key (default: $AIRLOCK_HOME/signing/airlock.key if it exists)."),
    ] = None,
) -> None:
    """Export what the store holds (signed), for `airlock pack --base` on the staging side."""
    from airlock.bundle.format.inventory import make_inventory, write_inventory
    from airlock.bundle.format.sign import load_private_key
    from airlock.store.store import Store

    settings = Settings.from_env()
    s = Store(store or settings.store)
    key_path = sign_key or (settings.signing_key if settings.signing_key.exists() else None)
    with s.locked():
        inventory = make_inventory(s)
    sig = write_inventory(inventory, out_path, key=load_private_key(key_path) if key_path else None)
    out.print(
        f"inventory of {s.root}: {len(inventory.blobs)} blobs, {len(inventory.models)} models -> {out_path}"
    )
    out.print(f"  signature: {sig}" if sig else "  [yellow]unsigned[/] (--sign KEY)")
