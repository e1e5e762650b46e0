"""``airlock deploy``: the spec as containers. ``compose`` renders (and runs) docker-compose; each target
is one command here over :func:`airlock.deploy.model.build_deployment` (docs/deploy.md).

The options every target takes (the spec, the store, ``--force``, the gateway's image) are the
``Spec``, ``StoreOpt``, ``ForceOpt`` and ``GatewayImageOpt`` aliases below, and
:func:`deploy_options` turns them into a :class:`~airlock.deploy.model.DeployOptions`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from airlock.cli.output import err, out
from airlock.errors import ConfigError

if TYPE_CHECKING:
    from airlock.deploy.compose import Rendered, ServiceState, UpResult
    from airlock.deploy.model import DeployOptions

app = typer.Typer(
    help="Deploy the spec as containers: docker-compose (and more targets).", no_args_is_help=True
)

SpecArg = Annotated[Path, typer.Argument(help="The spec (airlock.yaml).", show_default=False)]
StoreOpt = Annotated[
    Path | None, typer.Option("--store", help="The model store (default: the spec's store:, else airlock's).")
]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="Render models `airlock plan` rejects, and more GPUs than the spec has."),
]
GatewayImageOpt = Annotated[
    str | None,
    typer.Option(
        "--gateway-image", help="airlock's own image as installed (default: the store's newest 'airlock')."
    ),
]


def deploy_options(spec: Path, store: Path | None, force: bool, gateway_image: str | None) -> DeployOptions:
    from airlock.deploy.model import DeployOptions

    return DeployOptions(spec=spec, store=store, force=force, gateway_image=gateway_image)


def print_notes(notes: Sequence[str]) -> None:
    for note in notes:
        err.print(f"[yellow]note:[/] {escape(note)}")


def _render(rendered: Rendered) -> None:
    d = rendered.deployment
    err.print(f"[bold green]rendered[/] {escape(str(rendered.compose_file))} (project {escape(d.name)})")
    gw = d.gateway
    err.print(f"  gateway      {escape(gw.image)}  published on {escape(gw.host)}:{gw.port}", markup=False)
    for e in d.engines:
        gpus = f"{e.gpus} GPU ({','.join(e.gpu_ids) or 'any'})" if e.gpus else "CPU"
        err.print(f"  {e.name:<12} {e.image}  {e.kind}, {gpus}", markup=False)
    if rendered.monitoring:
        err.print("  monitoring   prometheus + grafana (profile 'monitoring'; Grafana on 127.0.0.1:3000)")
    print_notes(rendered.notes)


def _follow_lines() -> Callable[[Sequence[ServiceState]], None]:
    """A callback that prints each service's state when it changes (the engine's last log line)."""
    seen: dict[str, tuple[str, str]] = {}

    def on_state(states: Sequence[ServiceState]) -> None:
        for s in states:
            now = (s.status, s.last_line)
            if seen.get(s.service) != now:
                seen[s.service] = now
                line = f" | {s.last_line[:160]}" if s.last_line else ""
                err.print(f"  {s.service:<20} {s.status:<10}{line}", markup=False)

    return on_state


def _up_done(result: UpResult) -> None:
    changed = ", ".join(result.recreated) or "nothing (all up to date)"
    err.print(f"[bold green]up[/] in {result.elapsed_s:.0f} s; started or replaced: {escape(changed)}")


@app.command("compose")
def compose_cmd(
    spec: SpecArg,
    out_dir: Annotated[Path, typer.Option("--out", help="The folder for docker-compose.yml and .env.")],
    up: Annotated[
        bool,
        typer.Option("--up", help="Then `docker-compose up -d` and follow until every engine is healthy."),
    ] = False,
    down: Annotated[
        bool, typer.Option("--down", help="Stop and remove what --up started (keys stay).")
    ] = False,
    monitoring: Annotated[
        bool, typer.Option("--monitoring", help="Add Prometheus and Grafana (profile 'monitoring').")
    ] = False,
    store: StoreOpt = None,
    force: ForceOpt = False,
    gateway_image: GatewayImageOpt = None,
    prometheus_image: Annotated[
        str | None, typer.Option("--prometheus-image", help="Prometheus's image (default: the store's).")
    ] = None,
    grafana_image: Annotated[
        str | None, typer.Option("--grafana-image", help="Grafana's image (default: the store's).")
    ] = None,
    docker_host: Annotated[
        str | None,
        typer.Option("--docker-host", help="The daemon (default: DOCKER_HOST, else the local one)."),
    ] = None,
) -> None:
    """Render docker-compose.yml + .env for the spec: images by digest from the store, the store read-only,
    plan's engine arguments, healthchecks, GPUs, the gateway as the only published port."""
    from airlock.deploy.compose import ComposeOptions, Docker, compose_down, compose_up, render_compose

    if up and down:
        raise ConfigError("--up and --down together", hint="give one")
    docker = Docker(host=docker_host)
    if down:
        compose_down(out_dir, docker)
        err.print(
            f"[bold]down[/]: stopped {escape(str(out_dir / 'docker-compose.yml'))} (the state volume stays)"
        )
        return
    options = ComposeOptions(
        deploy=deploy_options(spec, store, force, gateway_image),
        out=out_dir,
        monitoring=monitoring,
        prometheus_image=prometheus_image,
        grafana_image=grafana_image,
    )
    rendered = render_compose(options)
    _render(rendered)
    if up:
        result = compose_up(out_dir, docker, monitoring=monitoring, on_state=_follow_lines())
        _up_done(result)
        err.print(
            "keys: docker-compose -f "
            f"{escape(str(rendered.compose_file))} run --rm --no-deps gateway keys create NAME"
        )
    out.print(str(rendered.compose_file), markup=False)
