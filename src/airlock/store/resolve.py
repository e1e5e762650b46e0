"""Where ``serve`` finds a model's files: the spec's own paths, else the model store.

* ``hf: {repo, revision}`` -> ``STORE/hub/models--org--name/snapshots/<commit>`` (the revision
  through ``refs/`` unless it is a commit), as ``huggingface_hub`` resolves it offline;
* ``gguf: NAME.gguf`` that does not exist as a file -> ``STORE/gguf/NAME.gguf`` (findable by name);
* ``path: DIR`` that does not exist -> the store's ``local/<model name>`` (what pack calls a local
  folder on the other side).

The default store is ``Settings.store`` (``$AIRLOCK_HOME/store``); a spec's ``store:`` overrides it.

Example::

    resolve_model_dir(model, Path("/srv/store"))  # PosixPath('/srv/store/hub/models--org--m/snapshots/3f..')
"""

from __future__ import annotations

import re
from pathlib import Path

from airlock.errors import ModelNotFoundError
from airlock.settings import Settings
from airlock.spec import HFSource, ModelSpec, Spec
from airlock.store import layout
from airlock.store.layout import local_repo

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def spec_store(spec: Spec, settings: Settings) -> Path:
    """The store a spec's models are found in: its own ``store:``, else the default one."""
    return spec.store or settings.store


def store_env(store: Path | None) -> dict[str, str]:
    """``HF_HOME``/``HF_HUB_CACHE`` for an engine, so ids resolve in the store (offline is always set)."""
    if store is None:
        return {}
    return {"HF_HOME": str(store), "HF_HUB_CACHE": str(store / layout.STORE_HUB)}


def snapshot_dir(store: Path, repo: str, revision: str = "main") -> Path:
    repo_dir = store / layout.STORE_HUB / layout.repo_folder(repo)
    commit = revision
    if not _COMMIT.match(revision):
        ref = repo_dir / "refs" / revision
        try:
            commit = ref.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ModelNotFoundError(
                f"{repo}@{revision} is not in the store {store}",
                hint="install its bundle with `airlock install DIR --store STORE`; `airlock ls` lists the store",
            ) from exc
    snapshot = repo_dir / "snapshots" / commit
    if not snapshot.is_dir():
        raise ModelNotFoundError(
            f"{repo}@{revision} (commit {commit[:12]}) is not in the store {store}",
            hint="install its bundle with `airlock install DIR --store STORE`",
        )
    return snapshot


def resolve_model_dir(model: ModelSpec, store: Path | None) -> Path:
    """A Hugging Face-format folder for ``model`` (a ``path`` or ``hf`` model)."""
    if model.path is not None:
        if model.path.exists() or store is None:
            return model.path
        try:
            return snapshot_dir(store, local_repo(model.name))
        except ModelNotFoundError:
            raise ModelNotFoundError(
                f"model {model.name!r}: {model.path} does not exist, and the store {store} lacks it",
                hint="install its bundle, or fix 'path'",
            ) from None
    if model.hf is not None:
        return _hf_snapshot(model.name, model.hf, store)
    raise ModelNotFoundError(f"model {model.name!r}: give 'path' or 'hf'")


def _hf_snapshot(name: str, hf: HFSource, store: Path | None) -> Path:
    """The snapshot of an ``hf`` model: only ever found in a store."""
    if store is None:
        raise ModelNotFoundError(f"model {name!r}: an 'hf' model needs a store (spec 'store:')")
    return snapshot_dir(store, hf.repo, hf.revision)


def _pick_gguf(model: ModelSpec, snapshot: Path) -> Path:
    from fnmatch import fnmatch

    found = sorted(p for p in snapshot.rglob("*.gguf"))
    allow = model.hf.allow if model.hf is not None else []
    if allow:
        found = [p for p in found if any(fnmatch(p.relative_to(snapshot).as_posix(), pat) for pat in allow)]
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ModelNotFoundError(
            f"model {model.name!r}: {snapshot} holds {len(found)} GGUF files ({names}); llama.cpp serves one",
            hint="select one with the hf source's 'allow' patterns, e.g. allow: ['*Q4_K_M.gguf']",
        )
    return found[0]


def resolve_gguf(model: ModelSpec, store: Path | None) -> Path:
    """The GGUF file for a llama.cpp model: the spec's file, else the store's by name or repo."""
    if model.gguf is not None:
        if model.gguf.exists() or store is None:
            return model.gguf
        by_name = store / layout.STORE_GGUF / model.gguf.name
        if by_name.exists():
            return by_name
        try:
            return _pick_gguf(model, snapshot_dir(store, local_repo(model.name)))
        except ModelNotFoundError:
            raise ModelNotFoundError(
                f"model {model.name!r}: {model.gguf} does not exist, and the store {store} has no {model.gguf.name}",
                hint="install its bundle (`airlock install`), or fix 'gguf'",
            ) from None
    if model.hf is not None:
        return _pick_gguf(model, _hf_snapshot(model.name, model.hf, store))
    raise ModelNotFoundError(f"model {model.name!r}: the llamacpp engine needs 'gguf' or 'hf'")
