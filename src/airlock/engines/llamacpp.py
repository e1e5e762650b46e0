"""llama.cpp's ``llama-server`` for GGUF models on CPUs, with continuous batching over ``--parallel`` slots.

The binary is looked for in the spec (``engine.binary``), ``AIRLOCK_LLAMA_SERVER``, airlock's cache
(where ``scripts/build-llama-server.sh`` puts it, with the llama.cpp commit in BUILD-INFO.json) and
finally ``PATH``. The internal API key goes in ``LLAMA_API_KEY`` (not argv, which other users see).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from airlock.engines.base import EngineConfig, Launch, engine_env
from airlock.errors import EngineNotFoundError
from airlock.settings import Settings
from airlock.spec import LlamaCppEngineSpec, ModelSpec
from airlock.store.resolve import resolve_gguf

BINARY = "llama-server"


def _cached_builds(settings: Settings) -> list[Path]:
    root = settings.cache / "engines" / "llamacpp"
    found = [p for p in root.glob(f"*/bin/{BINARY}") if os.access(p, os.X_OK)]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def locate_llama_server(engine: LlamaCppEngineSpec, settings: Settings) -> Path:
    for explicit, origin in (
        (engine.binary, "engine.binary"),
        (settings.llama_server, "AIRLOCK_LLAMA_SERVER"),
    ):
        if explicit is not None:
            if not (explicit.is_file() and os.access(explicit, os.X_OK)):
                raise EngineNotFoundError(f"{origin}={explicit}: not an executable file")
            return explicit
    builds = _cached_builds(settings)
    if builds:
        return builds[0]
    on_path = shutil.which(BINARY)
    if on_path:
        return Path(on_path)
    raise EngineNotFoundError(
        f"{BINARY} not found (looked in the spec, AIRLOCK_LLAMA_SERVER, {settings.cache}/engines/llamacpp and PATH)",
        hint="build it once with scripts/build-llama-server.sh (or `make setup`)",
    )


def build_info(binary: Path) -> str:
    """The llama.cpp commit recorded beside a cached build, else 'unknown'."""
    info = binary.parent.parent / "BUILD-INFO.json"
    try:
        data = json.loads(info.read_text())
    except (OSError, ValueError):
        return "unknown"
    return f"llama.cpp {str(data.get('llama_cpp_commit', 'unknown'))[:12]}"


def llamacpp_engine(
    model: ModelSpec,
    engine: LlamaCppEngineSpec,
    settings: Settings,
    *,
    port: int,
    api_key: str,
    store: Path | None = None,
) -> EngineConfig:
    binary = locate_llama_server(engine, settings)
    gguf = resolve_gguf(model, store)  # the spec's file, else the store's (by file name, or 'hf' repo)
    argv = [
        str(binary),
        "--model", str(gguf),
        "--alias", model.name,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--parallel", str(engine.parallel),
        "--ctx-size", str(engine.ctx_size),
        "--metrics",
        "--no-webui",
    ]  # fmt: skip
    if engine.threads is not None:
        argv += ["--threads", str(engine.threads)]
    if engine.embeddings:
        argv.append("--embeddings")
    argv += engine.args
    return EngineConfig(
        name=model.name,
        kind="llamacpp",
        base_url=f"http://127.0.0.1:{port}",
        upstream_model=model.name,
        launch=Launch(argv=tuple(argv), env=engine_env({**engine.env, "LLAMA_API_KEY": api_key})),
        api_key=api_key,
        health_path="/health",
        startup_timeout_s=engine.startup_timeout_s,
        version=build_info(binary),
    )
