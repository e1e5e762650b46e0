"""Find a model's files from what the user typed: a folder, a GGUF file, a repo id in a cache or a store.

A Hugging Face cache holds ``models--org--name/{refs/<revision>, snapshots/<commit>/...}``; a repo id
is looked up there, offline, with huggingface_hub's own resolver, so a revision name, a commit hash or
"main" all work. airlock's store (``STORE/hub/`` has the same layout) holds what ``airlock install``
placed: models from Hugging Face under their ids, local folders and GGUF files as ``local/<name>``.

Without ``cache_dir``, a repo id is looked up in the Hugging Face cache (HF_HUB_CACHE, HF_HOME), then
in ``store``; a bare name (no ``/``) is also tried as the store's ``local/<name>``.

Example::

    locate_model("meta-llama/Llama-3.1-8B-Instruct", store=Path("/srv/airlock/store"))
    # PosixPath('/srv/airlock/store/hub/models--meta-llama--Llama-3.1-8B-Instruct/snapshots/0e9e39f...')
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from airlock.errors import ModelNotFoundError
from airlock.store.layout import local_repo
from airlock.store.resolve import snapshot_dir

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAME = re.compile(r"^[\w.-]+$")


def default_hf_cache(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    home = Path(env["HF_HOME"]).expanduser() if env.get("HF_HOME") else Path.home() / ".cache" / "huggingface"
    return home / "hub"


def locate_model(
    model: str | Path,
    *,
    cache_dir: Path | None = None,
    revision: str | None = None,
    store: Path | None = None,
) -> Path:
    """A local path wins; then a repo id in ``cache_dir`` alone when given, else in the Hugging Face
    cache (HF_HUB_CACHE or ~/.cache/huggingface/hub) and then in airlock's ``store``."""
    path = Path(model).expanduser()
    if path.exists():
        return path
    text = str(model)
    shown = f"{text}{'@' + revision if revision else ''}"
    if not REPO_ID.match(text):
        if store is not None and cache_dir is None and _NAME.match(text):
            found = _in_store(local_repo(text), store, revision)
            if found is not None:
                return found
        raise ModelNotFoundError(
            f"{text}: no such file or folder, and not a repo id (org/name)"
            + (f" nor a model name in the store {store}" if store is not None and cache_dir is None else ""),
            hint="give the model's folder or .gguf file, or a repo id (`airlock ls` lists the store)",
        )
    if cache_dir is not None:
        found = _in_hf_cache(text, cache_dir, revision)
        if found is None:
            raise ModelNotFoundError(
                f"{shown} is not in the Hugging Face cache or store at {cache_dir}",
                hint="nothing is downloaded here: give the cache or store that holds it, or its folder",
            )
        return found
    cache = default_hf_cache()
    found = _in_hf_cache(text, cache, revision)
    if found is None and store is not None:
        found = _in_store(text, store, revision)
    if found is None:
        where = f"the Hugging Face cache at {cache}" + (
            f" nor in airlock's store at {store}" if store else ""
        )
        raise ModelNotFoundError(
            f"{shown} is not in {where}",
            hint="nothing is downloaded here: install its bundle (`airlock install`), "
            "give --hf-cache DIR, or give the model's folder",
        )
    return found


def _in_hf_cache(repo: str, cache: Path, revision: str | None) -> Path | None:
    """The snapshot of ``repo`` in a Hugging Face cache (or a store, or an HF_HOME holding ``hub/``); None if absent."""
    if cache.is_dir() and (cache / "hub").is_dir() and not any(cache.glob("models--*")):
        cache = cache / "hub"  # given HF_HOME (or a store) rather than the hub folder
    if not cache.is_dir():
        return None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelNotFoundError("huggingface_hub is not installed; give the model's folder instead") from exc
    try:
        folder = snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        return None
    return Path(folder)


def _in_store(repo: str, store: Path, revision: str | None) -> Path | None:
    """The snapshot of ``repo`` in airlock's store, as serve resolves it; None if absent."""
    try:
        return snapshot_dir(store, repo, revision or "main")
    except ModelNotFoundError:
        return None
