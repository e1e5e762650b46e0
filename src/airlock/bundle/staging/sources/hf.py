"""Hugging Face models, downloaded through ``huggingface_hub`` (resumable, with its progress bars).

The revision (a branch, tag or commit) is resolved to its commit by the Hub and recorded. Files land
in huggingface_hub's own cache (``HF_HUB_CACHE``, or ``--hf-cache``), so what an earlier download or
an earlier pack fetched is reused. The files packed are exactly those of the commit's tree listing
that pass ``allow``/``ignore`` (a snapshot folder may hold more from other downloads), and each LFS
file's SHA-256 is checked, when it is hashed, against the one the Hub gave it (its ETag, which
huggingface_hub uses as the name of the cached blob): a damaged download is caught.

Without network, a revision already in the cache (``refs/main``) is packed from the cache.

Example::

    collect_hf("llama", HFSource(repo="meta-llama/Llama-3.2-1B", ignore=["*.pth"]), HubOptions())
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlock.bundle.format.manifest import Source
from airlock.bundle.staging.sources.base import Collected, SourceFile, readme_license, safe_logical
from airlock.bundle.staging.sources.local import walk_folder
from airlock.errors import SourceError
from airlock.spec import HFSource


@dataclass(frozen=True)
class HubOptions:
    endpoint: str | None = None
    cache_dir: Path | None = None
    token: str | None = None
    max_workers: int = 8


def _etag_sha256(snapshot_file: Path) -> str | None:
    """The SHA-256 the Hub gave an LFS file: huggingface_hub names its cache blob by that ETag."""
    try:
        name = Path(os.readlink(snapshot_file)).name
    except OSError:
        return None
    return name if re.fullmatch(r"[0-9a-f]{64}", name) else None


def _download(name: str, hf: HFSource, options: HubOptions) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"model {name!r} ({hf.repo}@{hf.revision})"
    try:
        folder = snapshot_download(
            hf.repo,
            revision=hf.revision,
            cache_dir=options.cache_dir,
            endpoint=options.endpoint,
            token=options.token,
            allow_patterns=hf.allow or None,
            ignore_patterns=hf.ignore or None,
            max_workers=options.max_workers,
        )
    except GatedRepoError as exc:
        raise SourceError(
            f"{where}: the repo is gated", hint="accept its terms on the Hub and set HF_TOKEN"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise SourceError(
            f"{where}: no such repo (or it is private)", hint="check the id, or set HF_TOKEN"
        ) from exc
    except RevisionNotFoundError as exc:
        raise SourceError(
            f"{where}: no such revision", hint="give a branch, tag or commit of the repo"
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise SourceError(f"{where}: the Hub cannot be reached and the cache lacks it ({exc})") from exc
    except HfHubHTTPError as exc:
        raise SourceError(f"{where}: the Hub answered {exc}") from exc
    except OSError as exc:
        raise SourceError(f"{where}: download failed: {exc}") from exc
    return Path(folder)


def _tree(hf: HFSource, commit: str, options: HubOptions) -> list[Any] | None:
    """The commit's file listing: from huggingface_hub's tree cache (>= 1.x), else from the Hub."""
    try:
        from huggingface_hub import get_cached_repo_tree
        from huggingface_hub.errors import CachedRepoTreeNotFoundError

        try:
            return list(get_cached_repo_tree(hf.repo, revision=commit, cache_dir=options.cache_dir))
        except CachedRepoTreeNotFoundError:
            pass
    except ImportError:  # an older huggingface_hub
        pass
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    try:
        api = HfApi(endpoint=options.endpoint, token=options.token)
        entries = api.list_repo_tree(hf.repo, revision=commit, recursive=True)
        return [e for e in entries if isinstance(e, RepoFile)]
    except Exception:  # offline: pack from the cache as it is
        return None


def collect_hf(name: str, hf: HFSource, options: HubOptions) -> Collected:
    from huggingface_hub.utils._paths import filter_repo_objects

    where = f"model {name!r}"
    snapshot = _download(name, hf, options)
    commit = snapshot.name
    tree = _tree(hf, commit, options)
    files: list[SourceFile] = []
    if tree is not None:
        wanted = filter_repo_objects(
            tree, allow_patterns=hf.allow or None, ignore_patterns=hf.ignore or None, key=lambda f: f.path
        )
        for entry in sorted(wanted, key=lambda f: f.path):
            safe_logical(entry.path, where=where)
            origin = snapshot / entry.path
            if not origin.is_file():
                raise SourceError(f"{where}: {entry.path} is missing from the downloaded snapshot {snapshot}")
            size = origin.stat().st_size
            if size != entry.size:
                raise SourceError(
                    f"{where}: {entry.path} is {size} bytes in the cache, but the Hub lists {entry.size}",
                    hint="the download is damaged: delete it from the cache and run pack again",
                )
            lfs = entry.lfs.sha256 if getattr(entry, "lfs", None) is not None else None
            expected = lfs or _etag_sha256(origin)
            files.append(SourceFile(path=entry.path, origin=origin, expected_sha256=expected))
    else:  # packed from the cache without the Hub: take the snapshot's files that pass the patterns
        found = walk_folder(snapshot, where=where)
        keep = set(
            filter_repo_objects(
                [f.path for f in found], allow_patterns=hf.allow or None, ignore_patterns=hf.ignore or None
            )
        )
        files = [f for f in found if f.path in keep]
    if not files:
        raise SourceError(f"{where}: no files of {hf.repo}@{commit[:12]} pass its allow/ignore patterns")
    return Collected(
        kind="model",
        name=name,
        repo=hf.repo,
        source=Source(type="hf", repo=hf.repo, revision=hf.revision, commit=commit),
        files=tuple(files),
        license=readme_license(snapshot),
    )
