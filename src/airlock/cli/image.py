"""``airlock image build``: airlock's own CPU image (gateway + llama-server + the default model) as an
OCI layout, built from Debian's packages and local files (docs/image.md).

The defaults are found here, where the CLI may use every stage: the default model where ``airlock
serve`` finds it, llama-server where the llamacpp engine finds it, the checkout this airlock runs from.
The build itself is :func:`airlock.image_build.build_image`, imported when the command runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from airlock.cli.output import err, out
from airlock.common.wheels import airlock_checkout
from airlock.errors import ConfigError

if TYPE_CHECKING:
    from airlock.image_build import BuiltImage

app = typer.Typer(help="Build airlock's own container image (CPU: gateway, llama-server, default model).",
                  no_args_is_help=True)  # fmt: skip


class _StepLines:
    """The build's steps as lines on stderr (each step is one phase of the progress protocol)."""

    def start(self, phase: str, total: int) -> None:
        err.print(f"[dim]{escape(phase)} ...[/]")

    def advance(self, phase: str, n: int) -> None:
        pass

    def finish(self, phase: str) -> None:
        pass


def source_date_epoch(source: Path) -> int:
    """SOURCE_DATE_EPOCH if set, else the checkout's last commit time, else 0."""
    if value := os.environ.get("SOURCE_DATE_EPOCH"):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"SOURCE_DATE_EPOCH={value!r}: not a number of seconds") from None
    try:
        done = subprocess.run(["git", "-C", str(source), "log", "-1", "--format=%ct"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        return int(done.stdout.strip())
    except (OSError, subprocess.CalledProcessError, ValueError):
        return 0


def render(built: BuiltImage) -> None:
    from airlock.common.fileio import human

    err.print(f"[bold green]built[/] {escape(built.reference)}")
    for layer in built.layers:
        err.print(f"  {layer.name:<10} {human(layer.size):>10}  {layer.digest}", markup=False)
    c = built.contents
    err.print(
        f"  airlock {c.airlock_version} ({c.airlock_revision}), llama.cpp {c.llama_cpp_commit[:12]}, "
        f"{c.model_file} sha256:{c.model_sha256[:12]}, {len(c.debian_packages)} Debian and "
        f"{len(c.python_packages)} Python packages",
        markup=False,
    )
    out.print(built.manifest_digest, markup=False)


@app.command("build")
def build_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="The OCI layout folder to write (must not exist).")],
    tag: Annotated[str, typer.Option("--tag", help="The image's tag in the layout.")] = "latest",
    model: Annotated[
        Path | None, typer.Option(help="The GGUF to serve (default: the embedded default model).")
    ] = None,
    llama_server: Annotated[
        Path | None,
        typer.Option(
            "--llama-server", help="The llama-server binary (default: the cached build, as serve finds it)."
        ),
    ] = None,
    source: Annotated[
        Path | None, typer.Option(help="airlock's checkout whose wheel goes in (default: this one).")
    ] = None,
    lock: Annotated[
        Path | None,
        typer.Option(help="Requirements pinned by hash (default: this environment's versions)."),
    ] = None,
    refresh_debian: Annotated[
        bool, typer.Option("--refresh-debian", help="Build the Debian root again (security updates).")
    ] = False,
    summary: Annotated[
        Path | None, typer.Option(help="Write what the image holds as JSON to this file.")
    ] = None,
) -> None:
    """Build the image as an OCI layout; prints the manifest digest. Needs root, mmdebstrap and umoci."""
    from airlock.common.fileio import write_atomic
    from airlock.engines.llamacpp import locate_llama_server
    from airlock.image_build import ImageBuildOptions, build_image
    from airlock.serving.default_model import locate_default_model
    from airlock.settings import Settings
    from airlock.spec import LlamaCppEngineSpec

    settings = Settings.from_env()
    where = source or airlock_checkout()
    if where is None:
        raise ConfigError("airlock is not running from its checkout", hint="give the checkout with --source")
    options = ImageBuildOptions(
        out=out_dir.absolute(),
        model=model or locate_default_model(settings),
        llama_server=llama_server or locate_llama_server(LlamaCppEngineSpec(kind="llamacpp"), settings),
        source=where,
        cache=settings.cache / "image-build",
        tag=tag,
        source_date_epoch=source_date_epoch(where),
        lock=lock,
        refresh_debian=refresh_debian,
    )
    built = build_image(options, progress=_StepLines())
    if summary is not None:
        write_atomic(summary, json.dumps(built.summary(), indent=2).encode() + b"\n")
    render(built)
