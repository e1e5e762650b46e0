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
    gpus_per_node: Annotated[
        int | None,
        typer.Option(
            "--gpus-per-node",
            min=1,
            help="GPUs of one host: an engine needing more runs on Ray over hosts (DIR/head, DIR/worker).",
        ),
    ] = None,
    head_address: Annotated[
        str | None,
        typer.Option(
            "--head-address", help="With --gpus-per-node: the Ray head host's address between hosts."
        ),
    ] = None,
) -> None:
    """Render docker-compose.yml + .env for the spec: images by digest from the store, the store read-only,
    plan's engine arguments, healthchecks, GPUs, the gateway as the only published port."""
    from dataclasses import replace

    from airlock.deploy.compose import ComposeOptions, Docker, compose_down, compose_up, render_compose
    from airlock.deploy.ray import HEAD_DIR, RayOptions, render_ray_compose

    if up and down:
        raise ConfigError("--up and --down together", hint="give one")
    docker = Docker(host=docker_host)
    if head_address is not None and gpus_per_node is None:
        raise ConfigError("--head-address goes with --gpus-per-node", hint="give both, or neither")
    if down:
        here = out_dir / HEAD_DIR if (out_dir / HEAD_DIR / "docker-compose.yml").is_file() else out_dir
        compose_down(here, docker)
        err.print(
            f"[bold]down[/]: stopped {escape(str(here / 'docker-compose.yml'))} (the state volume stays)"
        )
        return
    options = ComposeOptions(
        deploy=deploy_options(spec, store, force, gateway_image),
        out=out_dir,
        monitoring=monitoring,
        prometheus_image=prometheus_image,
        grafana_image=grafana_image,
    )
    if gpus_per_node is None:
        rendered = render_compose(options)
    else:
        spread = render_ray_compose(
            options, RayOptions(gpus_per_node=gpus_per_node, head_address=head_address)
        )
        rendered = replace(spread.head, notes=spread.notes)
        if spread.worker_file is not None:
            err.print(f"  on each other host: {escape(str(spread.worker_file))}")
    _render(rendered)
    if up:
        result = compose_up(rendered.out, docker, monitoring=monitoring, on_state=_follow_lines())
        _up_done(result)
        err.print(
            "keys: docker-compose -f "
            f"{escape(str(rendered.compose_file))} run --rm --no-deps gateway keys create NAME"
        )
    out.print(str(rendered.compose_file), markup=False)


@app.command("k8s")
def k8s_cmd(
    spec: SpecArg,
    out_dir: Annotated[
        Path, typer.Option("--out", help="The folder for the manifests and kustomization.yaml.")
    ],
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="The namespace (default: the spec's folder name).")
    ] = None,
    gpus_per_node: Annotated[
        int | None,
        typer.Option(
            "--gpus-per-node", min=1, help="GPUs of one node: an engine needing more runs on Ray (KubeRay)."
        ),
    ] = None,
    node_selector: Annotated[
        list[str] | None, typer.Option("--node-selector", help="KEY=VALUE the engines' nodes carry (repeat).")
    ] = None,
    toleration: Annotated[
        list[str] | None,
        typer.Option("--toleration", help="KEY[=VALUE][:EFFECT], a taint the engines accept (repeat)."),
    ] = None,
    store_claim: Annotated[
        str | None, typer.Option("--store-claim", help="An existing ReadOnlyMany claim holding the store.")
    ] = None,
    store_size: Annotated[
        str | None,
        typer.Option("--store-size", help="The store claim's size (default: the store's, on disk)."),
    ] = None,
    storage_class: Annotated[
        str | None, typer.Option("--storage-class", help="The store claim's class (default: the cluster's).")
    ] = None,
    store_host_path: Annotated[
        str | None,
        typer.Option(
            "--store-host-path", help="Mount the store from this path on each node instead of a claim."
        ),
    ] = None,
    service_type: Annotated[
        str,
        typer.Option("--service-type", help="The gateway's Service: ClusterIP, NodePort or LoadBalancer."),
    ] = "ClusterIP",
    vllm_as_root: Annotated[
        bool, typer.Option("--vllm-as-root", help="Run vLLM's image as its own root user, not uid 10001.")
    ] = False,
    store: StoreOpt = None,
    force: ForceOpt = False,
    gateway_image: GatewayImageOpt = None,
) -> None:
    """Render Kubernetes manifests for the spec (kustomize-ready): engines with GPUs and probes, the
    store on a claim, the gateway, a NetworkPolicy denying egress, keys in a Secret, images by digest."""
    from airlock.common.types import parse_size
    from airlock.deploy.k8s import (
        K8sOptions,
        parse_labels,
        parse_toleration,
        workload_images,
        write_k8s,
    )
    from airlock.deploy.model import build_deployment

    if service_type not in ("ClusterIP", "NodePort", "LoadBalancer"):
        raise ConfigError(f"--service-type {service_type!r}: one of ClusterIP, NodePort, LoadBalancer")
    if store_host_path is not None and (store_claim is not None or store_size is not None):
        raise ConfigError("--store-host-path mounts the store from the nodes: no claim to name or size")
    options = K8sOptions(
        out=out_dir,
        namespace=namespace,
        store_claim=store_claim,
        store_size=parse_size("--store-size", store_size) if store_size is not None else None,
        storage_class=storage_class,
        store_host_path=store_host_path,
        node_selector=parse_labels(node_selector or ()),
        tolerations=tuple(parse_toleration(t) for t in toleration or ()),
        gpus_per_node=gpus_per_node,
        gateway_service_type=service_type,  # type: ignore[arg-type]  # checked above
        vllm_as_root=vllm_as_root,
    )
    result = write_k8s(build_deployment(deploy_options(spec, store, force, gateway_image)), options)
    err.print(f"[bold green]rendered[/] {escape(str(result.out))} (namespace {escape(result.namespace)})")
    for obj in result.objects:
        if obj["kind"] in ("Deployment", "RayCluster"):
            images = " ".join(workload_images(obj))
            err.print(f"  {obj['kind']:<11} {obj['metadata']['name']:<24} {images}", markup=False)
    print_notes(result.warnings)
    err.print(f"apply: kubectl apply -k {escape(str(result.out))}")
    if result.ray_clusters:
        err.print("  (a RayCluster needs the KubeRay operator, 1.1 or newer, in the cluster)")
    out.print(str(result.out), markup=False)
