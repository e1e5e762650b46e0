"""What answered a prompt: the weights' digest, the engine and its version, the hardware.

The digest is the audit's (:func:`airlock.gateway.audit.model_identities`): ``sha256:`` over the sorted
``path sha256`` lines of the model's files. A GGUF file given by path is one line (its name), as pack
names it; a model in the store is read from the store's record of what was installed (hashed when it
was installed); a local folder is hashed file by file.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
from pathlib import Path

from airlock.accept.golden import ModelRecord
from airlock.engines.base import EngineConfig
from airlock.gateway.audit import model_identities
from airlock.spec import LlamaCppEngineSpec, ModelSpec, RemoteEngineSpec, Spec
from airlock.store.resolve import resolve_gguf, resolve_model_dir
from airlock.store.store import Store


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def listing_digest(files: dict[str, str]) -> str:
    """``sha256:`` over ``path sha256`` lines sorted by path (the audit's model identity)."""
    listing = "".join(f"{path} {sha}\n" for path, sha in sorted(files.items()))
    return "sha256:" + hashlib.sha256(listing.encode()).hexdigest()


def _folder_files(root: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        found[rel.as_posix()] = _sha256(path)
    return found


def _stored_digest(model: ModelSpec, store: Path | None) -> str | None:
    if store is None or model.hf is None or not (store / ".airlock").is_dir():
        return None
    hf = model.hf
    db = Store(store).load_db()
    found = [m for m in db.models if m.repo == hf.repo and hf.revision in (m.commit, m.revision)]
    if not found:
        return None
    chosen = max(found, key=lambda m: m.installed).model_copy(update={"name": model.name})
    return model_identities([chosen])[model.name].digest


def model_digest(model: ModelSpec, store: Path | None) -> str:
    if isinstance(model.engine, RemoteEngineSpec):
        return f"remote {model.engine.url}"
    stored = _stored_digest(model, store)
    if stored is not None:
        return stored
    if isinstance(model.engine, LlamaCppEngineSpec) and model.path is None:
        gguf = resolve_gguf(model, store)
        return listing_digest({gguf.name: _sha256(gguf)})
    return listing_digest(_folder_files(resolve_model_dir(model, store)))


def hardware() -> str:
    """The CPU's model name and the GPUs (``nvidia-smi -L``), as one line."""
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = "none"
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0:
            names = [line.split(" (UUID")[0].split(": ", 1)[-1] for line in done.stdout.splitlines() if line]
            gpus = ", ".join(names) or "none"
    return f"{cpu}; GPUs: {gpus}"


def model_records(spec: Spec, engines: list[EngineConfig], store: Path | None) -> list[ModelRecord]:
    """One record per model of ``spec`` (``engines``: its engine configs, for kind and version)."""
    by_name = {e.name: e for e in engines}
    host = hardware()
    return [
        ModelRecord(
            name=model.name,
            digest=model_digest(model, store),
            engine=model.engine.kind,
            engine_version=by_name[model.name].version if model.name in by_name else "unknown",
            hardware=host,
        )
        for model in spec.models
    ]
