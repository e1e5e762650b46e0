"""``airlock serve``: the gateway over supervised engines; the embedded default model without a spec.

Everything heavy (the serving stack, uvicorn, aiohttp, the spec's models) is imported inside
:func:`serve`, so that ``airlock --help`` and every other command start without it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from airlock.cli.output import err

if TYPE_CHECKING:
    from rich.status import Status

    from airlock.engines.supervisor import EngineEvent
    from airlock.gateway.apikeys import KeyStore
    from airlock.serving.stack import Listening
    from airlock.settings import Settings
    from airlock.spec import Spec

# EngineState's value -> its colour (keyed by value so that the supervisor loads only when serving)
_STYLE = {"starting": "yellow", "ready": "green", "restarting": "yellow", "failed": "red", "stopped": "dim"}


def _load(config: Path | None, settings: Settings) -> tuple[Spec, str]:
    from airlock.serving.default_model import default_spec
    from airlock.spec import load_spec

    if config is not None:
        return load_spec(config), str(config)
    local = Path("airlock.yaml")
    if local.is_file():
        return load_spec(local), str(local)
    return default_spec(settings), "the embedded default model (no airlock.yaml)"


def _first_key(store: KeyStore) -> str | None:
    """On a first run with auth on and no key at all, create an admin key to print once."""
    if store.list(include_revoked=True):
        return None
    _, token = store.create("admin")
    return token


def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="The spec (default: ./airlock.yaml if present).")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: the spec's, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default: the spec's, 8000; 0: any free).")
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without API keys: anyone who can reach the port gets in.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Start vLLM models even where `airlock plan` says they cannot start."),
    ] = False,
    require_all: Annotated[
        bool,
        typer.Option(
            "--require-all",
            help="Fail if any model fails to start (default: serve the models that are ready, 503 for "
            "the others while they are retried; fail only if none is ready).",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Gateway processes sharing the port (default: the spec's gateway.workers, 1); the "
            "engines run once. Keys, limits, metrics and the audit log are shared.",
        ),
    ] = None,
) -> None:
    """Serve the spec's models (or the embedded default model) behind an OpenAI-compatible gateway."""
    import uvloop

    from airlock.gateway.apikeys import KeyStore
    from airlock.serving.stack import ServeOptions
    from airlock.serving.stack import serve as serve_core
    from airlock.settings import Settings

    settings = Settings.from_env()
    spec, origin = _load(config, settings)
    auth = spec.gateway.auth and not no_auth
    # checks --host and --port (one line, exit 2) before anything is printed or created
    options = ServeOptions(
        spec=spec, auth=auth, host=host, port=port, force=force, workers=workers,
        require_all=require_all or spec.gateway.require_all_engines,
    )  # fmt: skip
    err.print(f"airlock: serving {escape(origin)}")
    token = _first_key(KeyStore(spec.gateway.database or settings.keys_db)) if auth else None
    waiting: dict[str, str] = {}  # engine -> its latest "still starting" note
    spinner: list[Status] = []

    def on_event(event: EngineEvent) -> None:
        if event.progress:  # a live line on a terminal, nothing in logs
            if err.is_terminal:
                waiting[event.engine] = (
                    f"{escape(event.engine)} ({event.elapsed_s:.0f} s): {escape(event.message)}"
                )
                text = "\n".join(waiting.values())
                if spinner:
                    spinner[0].update(text)
                else:
                    spinner.append(err.status(text))
                    spinner[0].start()
            return
        waiting.pop(event.engine, None)
        if spinner and not waiting:
            spinner.pop().stop()
        took = f" [dim]({event.elapsed_s:.1f} s)[/]" if event.elapsed_s else ""
        style = _STYLE[event.state.value]
        err.print(
            f"  [{style}]{event.state.value:>10}[/]  [bold]{escape(event.engine)}[/]  {escape(event.message)}{took}"
        )

    def on_note(model: str, text: str) -> None:
        err.print(f"  [dim]{'plan':>10}[/]  [bold]{escape(model)}[/]  [dim]{escape(text)}[/]")

    def on_listening(info: Listening) -> None:
        processes = f"  ({info.workers} gateway workers)" if info.workers > 1 else ""
        err.print(
            f"[bold green]ready[/]: {escape(info.url)}/v1  models: {escape(', '.join(info.models))}{processes}"
        )
        if info.waiting:
            err.print(
                f"[yellow]not ready[/]: {escape(', '.join(info.waiting))}: failed to start; retried in the "
                "background, requests get 503 until then (--require-all makes this an error)"
            )
        if not info.auth:
            err.print(
                "[bold red]authentication is OFF[/] (--no-auth): anyone who reaches this port can use it"
            )
        elif token:
            err.print("First run: created the API key [bold]admin[/]. Store it now; it is not shown again:")
            err.print(f"  {token}", markup=False)
        # a command alone on its line, never wrapped (err soft-wraps), so that it can be copied
        header = " -H 'Authorization: Bearer <key>'" if info.auth else ""
        err.print("[dim]try (Ctrl-C stops the server):[/]")
        err.print(f"  curl {info.url}/v1/models{header}", markup=False)

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(
            serve_core(options, settings, on_event=on_event, on_listening=on_listening, on_note=on_note)
        )
    err.print("airlock: stopped")
