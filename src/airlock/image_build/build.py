"""``build_image``: airlock's own CPU image, from local files and Debian's packages, no registry.

Steps: the Debian root (mmdebstrap, cached), staged into a folder; airlock's wheel and its
dependencies installed into ``/opt/airlock/venv`` there (offline, by hash); llama-server and the
default model placed beside it and checked in the root (``ldd`` finds every library, ``airlock
--version`` runs); five layers written as reproducible tars, least changing first, so that an update
of airlock changes one small layer::

    debian     the root file system                      (mmdebstrap tarball, as cached)
    python     /opt/airlock/venv with airlock's dependencies
    model      /opt/airlock/models/<the default GGUF>
    llama.cpp  /opt/airlock/llama.cpp (llama-server, BUILD-INFO.json, its licence)
    airlock    airlock itself in the venv, and /var/lib/airlock (its state; a volume)

then umoci assembles the OCI layout (config, labels) in a partial folder renamed to ``--out`` at the
end. The container runs ``airlock serve --host 0.0.0.0 --port 8080`` as uid 10001 with no airlock.yaml,
so it serves the default model as ``airlock serve`` does, API keys required.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from airlock.common.progress import NullProgress, ProgressSink
from airlock.errors import ImageBuildError
from airlock.image_build import debian, labels, layers, oci, python_env
from airlock.image_build.metadata import dpkg_installed, python_distributions
from airlock.image_build.options import RUN_UID, BuiltImage, Contents, ImageBuildOptions, Layer
from airlock.image_build.staging import llama_build_info, place_file, preflight, revision
from airlock.image_build.steps import ROOT_ENV, in_root, run

HOME = "/var/lib/airlock"
LLAMA_DIR = "opt/airlock/llama.cpp"
MODEL_DIR = "opt/airlock/models"
ENTRYPOINT = ("/opt/airlock/venv/bin/airlock",)


def command(port: int) -> tuple[str, ...]:
    return ("serve", "--host", "0.0.0.0", "--port", str(port))  # noqa: S104  # in the container: every interface


def environment(model_file: str) -> tuple[str, ...]:
    return (
        f"PATH=/opt/airlock/venv/bin:{ROOT_ENV['PATH']}",
        "LANG=C.UTF-8",
        "PYTHONUNBUFFERED=1",
        f"AIRLOCK_HOME={HOME}",
        "AIRLOCK_CACHE=/var/cache/airlock",
        f"AIRLOCK_LLAMA_SERVER=/{LLAMA_DIR}/bin/llama-server",
        f"AIRLOCK_DEFAULT_MODEL=/{MODEL_DIR}/{model_file}",
    )


class _Steps:
    """Times each step and reports it to the progress sink (one phase per step)."""

    def __init__(self, sink: ProgressSink) -> None:
        self.sink = sink
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.sink.start(name, 1)
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - began, 2)
            self.sink.advance(name, 1)
            self.sink.finish(name)


def build_image(options: ImageBuildOptions, *, progress: ProgressSink | None = None) -> BuiltImage:
    """Build the image into ``options.out`` (an OCI layout tagged ``options.tag``) and say what it holds."""
    steps = _Steps(progress or NullProgress())
    epoch = options.source_date_epoch
    with steps.step("checks"):
        preflight(options)
    with steps.step("debian root"):
        root_tar = debian.debian_root(
            options.cache, suite=options.suite, mirrors=options.mirrors, packages=options.packages,
            epoch=epoch, refresh=options.refresh_debian,
        )  # fmt: skip
    work_parent = options.cache / "work"
    work_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="image-", dir=work_parent))
    partial = options.out.with_name(f".{options.out.name}.partial")
    try:
        root = work / "root"
        root.mkdir()
        with steps.step("unpack root"):
            run(
                ["tar", "-C", str(root), "--numeric-owner", "-xpf", str(root_tar.tarball)],
                step="unpacking the Debian root",
            )
            packages = dpkg_installed((root / "var/lib/dpkg/status").read_text(encoding="utf-8"))
        with steps.step("python"):
            python = python_env.root_python(root, epoch=epoch)
            libc = dict(packages).get("libc6") or dict(packages).get(f"libc6:{debian.debian_arch()}", "")
            platforms = python_env.platform_tags(libc, os.uname().machine)
            wheel = python_env.build_airlock_wheel(options.source, work / "airlock-wheel", epoch=epoch)
            wheels = python_env.download_wheels(
                wheel, work / "wheels", python=python, platforms=platforms, lock=options.lock
            )
            dependency_paths, airlock_paths = python_env.install(root, wheels, python=python, epoch=epoch)
            site = root / python_env.VENV / "lib" / f"python{python}" / "site-packages"
            distributions = python_distributions(site)
        with steps.step("engine and model"):
            llama = llama_build_info(options.llama_server)
            llama_paths = [
                place_file(options.llama_server, root, f"{LLAMA_DIR}/bin/llama-server", mode=0o755).rel,
                *(
                    place_file(source, root, f"{LLAMA_DIR}/{name}", mode=0o644).rel
                    for name, source in llama.files
                ),
            ]
            model = place_file(options.model, root, f"{MODEL_DIR}/{options.model.name}", mode=0o644)
            _check_root(root, epoch=epoch, version=_version(wheels.airlock))
            state = root / HOME.lstrip("/")
            state.mkdir(parents=True, exist_ok=True)
            state.chmod(0o700)
        contents = Contents(
            airlock_version=_version(wheels.airlock),
            airlock_revision=revision(options.source),
            debian_suite=options.suite,
            debian_epoch=root_tar.epoch,
            debian_packages=packages,
            python_version=python,
            python_packages=distributions,
            wheel_hashes=wheels.hashes(),
            llama_cpp_commit=llama.commit,
            llama_cpp_native=llama.native,
            model_file=options.model.name,
            model_sha256=model.sha256,
            model_size=model.size,
        )
        tars = work / "layers"
        tars.mkdir()
        planned = {
            "python": dependency_paths,
            "model": [model.rel],
            "llama.cpp": llama_paths,
            "airlock": [*airlock_paths, HOME.lstrip("/")],
        }
        with steps.step("layers"):
            written = [layers.TarDigest(root_tar.tarball, root_tar.sha256, root_tar.tarball.stat().st_size)]
            for name, paths in planned.items():
                written.append(
                    layers.write_layer(
                        root, paths, tars / f"{name}.tar", epoch=epoch,
                        owners={HOME.lstrip("/"): (RUN_UID, RUN_UID)},
                    )
                )  # fmt: skip
        names = ["debian", *planned]
        created = labels.created(epoch)
        image_labels = labels.image_labels(contents, epoch=epoch)
        config = oci.ImageConfig(
            entrypoint=ENTRYPOINT, cmd=command(options.port), env=environment(options.model.name),
            port=options.port, volume=HOME, workdir=HOME, user=f"{RUN_UID}:{RUN_UID}",
            labels=image_labels, created=created,
        )  # fmt: skip
        with steps.step("oci layout"):
            shutil.rmtree(partial, ignore_errors=True)
            oci.new_layout(partial, options.tag, created=created)
            for name, tar in zip(names, written, strict=True):
                oci.add_layer(partial, options.tag, tar, name=name, created=created)
            oci.configure(partial, options.tag, config)
            digest, manifest, image_config = oci.read_image(partial, options.tag)
            os.rename(partial, options.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)
    diff_ids = image_config["rootfs"]["diff_ids"]
    built_layers = tuple(
        Layer(
            name=name, diff_id=diff_id, digest=blob["digest"], size=int(blob["size"]), uncompressed=tar.size
        )
        for name, tar, diff_id, blob in zip(names, written, diff_ids, manifest["layers"], strict=True)
    )
    for layer, tar in zip(built_layers, written, strict=True):
        if layer.diff_id != f"sha256:{tar.sha256}":
            raise ImageBuildError(
                f"layer {layer.name}: umoci recorded {layer.diff_id}, the tar is {tar.sha256}"
            )
    return BuiltImage(
        layout=options.out,
        tag=options.tag,
        manifest_digest=digest,
        config_digest=str(manifest["config"]["digest"]),
        layers=built_layers,
        labels=image_labels,
        contents=contents,
        entrypoint=config.entrypoint,
        cmd=config.cmd,
        env=config.env,
        seconds=steps.seconds,
    )


def _version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def _check_root(root: Path, *, epoch: int, version: str) -> None:
    """What the container will run, run once in the staged root: every library llama-server needs is
    there, and airlock starts and says its version."""
    libraries = in_root(root, ["ldd", f"/{LLAMA_DIR}/bin/llama-server"], step="ldd llama-server", epoch=epoch)
    missing = [line.split()[0] for line in libraries.splitlines() if "not found" in line]
    if missing:
        raise ImageBuildError(
            f"llama-server needs {', '.join(missing)}, which the Debian root lacks",
            hint="add the Debian package that has it to the image's packages",
        )
    shown = in_root(root, [ENTRYPOINT[0], "--version"], step="airlock --version in the image", epoch=epoch)
    if shown.strip() != version:
        raise ImageBuildError(f"airlock in the image says {shown.strip()!r}, its wheel is {version}")


__all__ = ["build_image"]
