"""Find a model's files from what the user typed: a folder, a GGUF file, a snapshot, or a repo id in a cache.

A Hugging Face cache (airlock's store uses the same layout) holds
``models--org--name/{refs/<revision>, snapshots/<commit>/...}``; a repo id is looked up there, offline,
with huggingface_hub's own resolver, so a revision name, a commit hash or "main" all work.

Example::

    locate_model("meta-llama/Llama-3.1-8B-Instruct", cache_dir=Path("/srv/airlock/store"))
    # PosixPath('/srv/airlock/store/models--meta-llama--Llama-3.1-8B-Instruct/snapshots/0e9e39f...')
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from airlock.errors import ModelNotFoundError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def default_hf_cache(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    home = Path(env["HF_HOME"]).expanduser() if env.get("HF_HOME") else Path.home() / ".cache" / "huggingface"
    return home / "hub"


def locate_model(model: str | Path, *, cache_dir: Path | None = None, revision: str | None = None) -> Path:
    """A local path wins; then a repo id in ``cache_dir`` (default: HF_HUB_CACHE or ~/.cache/huggingface/hub)."""
    path = Path(model).expanduser()
    if path.exists():
        return path
    text = str(model)
    if not _REPO_ID.match(text):
        raise ModelNotFoundError(f"{text}: no such file or folder, and not a Hugging Face repo id (org/name)")
    cache = cache_dir or default_hf_cache()
    if cache.is_dir() and (cache / "hub").is_dir() and not any(cache.glob("models--*")):
        cache = cache / "hub"  # given HF_HOME rather than the hub folder
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelNotFoundError("huggingface_hub is not installed; give the model's folder instead") from exc
    try:
        folder = snapshot_download(text, revision=revision, cache_dir=cache, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError) as exc:
        raise ModelNotFoundError(
            f"{text}{'@' + revision if revision else ''} is not in the Hugging Face cache at {cache}",
            hint="nothing is downloaded here: bring it with `airlock install`, or give its folder",
        ) from exc
    return Path(folder)
