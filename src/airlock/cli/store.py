"""``airlock ls`` and ``airlock inventory``: what the model store holds.

Both refuse a store that does not exist (exit 20): a mistyped ``--store`` must not read as an empty
store, nor become a signed inventory of nothing. The store and bundle code is imported inside each
command, so ``airlock --help`` does not load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from airlock.cli.output import out
from airlock.settings import Settings

if TYPE_CHECKING:
    from airlock.store.store import Store

StoreOpt = Annotated[
    Path | None, typer.Option("--store", help="The model store (default: $AIRLOCK_HOME/store).")
]


def open_store(store: Path | None) -> Store:
    """The store named by ``--store`` (else the default one), which must exist: StoreError if not."""
    from airlock.cli.bundle_render import shell_quote
    from airlock.store.store import Store

    s = Store(store or Settings.from_env().store)
    if store is None:
        if not s.root.exists():
            from airlock.errors import StoreError

            raise StoreError(f"no store at {s.root} yet", hint="`airlock install DIR` creates it")
        s.require()
    else:
        s.require(
            hint=f"check --store; `airlock install DIR --store {shell_quote(str(s.root))}` creates a store there"
        )
    return s


def ls_cmd(
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the store's index as JSON.")] = False,
) -> None:
    """List the models, wheels, files and container images in the store."""
    from rich.table import Table

    from airlock.common.fileio import human
    from airlock.common.words import counted

    s = open_store(store)
    db = s.load_db()
    if as_json:
        typer.echo(db.model_dump_json(indent=2))
        return
    out.print(f"store {escape(str(s.root))}", soft_wrap=True)
    if db.models:
        table = Table("model", "repo", "commit", "files", "size", "source", "license")
        for m in sorted(db.models, key=lambda m: (m.repo, m.installed)):
            table.add_row(
                escape(m.name),
                escape(m.repo),
                escape(m.commit[:12]),
                str(len(m.files)),
                human(sum(f.size for f in m.files)),
                escape(m.source),
                escape(m.license or "-"),
            )
        out.print(table)
    if db.wheels:
        size = human(sum(w.size for w in db.wheels))
        out.print(
            f"{counted(len(db.wheels), 'wheel')} ({size}) in {escape(str(s.root / 'wheels'))}", soft_wrap=True
        )
    if db.files:
        shown = ", ".join(f.path for f in db.files[:5]) + (" ..." if len(db.files) > 5 else "")
        out.print(
            f"{counted(len(db.files), 'file')} in {escape(str(s.root / 'files'))}: {escape(shown)}",
            soft_wrap=True,
        )
    if db.images:
        table = Table("image", "digest", "platform", "size", "needs CUDA", "installed to")
        for i in sorted(db.images, key=lambda i: (i.reference, i.installed)):
            table.add_row(
                escape(i.ref_name),
                escape(i.digest[:19]),
                escape(i.platform),
                human(i.size),
                escape(i.nvidia_require_cuda or i.cuda_version or "-"),
                escape("\n".join(f"{t.kind}: {t.reference}" for t in i.targets) or "the store only"),
            )
        out.print(table)
    if not (db.models or db.wheels or db.files or db.images):
        out.print("[dim]the store is empty: `airlock install DIR` fills it[/]", soft_wrap=True)


def inventory_cmd(
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Where to write the inventory (JSON).")],
    store: StoreOpt = None,
    sign_key: Annotated[
        Path | None,
        typer.Option("--sign", help="Private key (default: the `signing-key create` one, if any)."),
    ] = None,
) -> None:
    """Export what the store holds (signed), for `airlock pack --base` on the staging side."""
    from airlock.bundle.format.inventory import make_inventory, write_inventory
    from airlock.bundle.format.sign import load_private_key
    from airlock.common.words import counted

    settings = Settings.from_env()
    s = open_store(store)
    key_path = sign_key or (settings.signing_key if settings.signing_key.exists() else None)
    with s.locked():
        inventory = make_inventory(s)
    sig = write_inventory(inventory, out_path, key=load_private_key(key_path) if key_path else None)
    out.print(
        f"inventory of {escape(str(s.root))}: {counted(len(inventory.blobs), 'blob')}, "
        f"{counted(len(inventory.models), 'model')} -> {escape(str(out_path))}",
        soft_wrap=True,
    )
    if sig:
        out.print(f"  signature: {escape(str(sig))}", soft_wrap=True)
    else:
        out.print(
            "  [yellow]unsigned[/] (sign with --sign KEY; `airlock signing-key create` makes a key)",
            soft_wrap=True,
        )
