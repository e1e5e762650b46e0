"""Local sources: a Hugging Face-format folder (``path``) or a single GGUF file (``gguf``).

A folder is walked without leaving it through a linked *folder*; links to files are followed (a
Hugging Face cache snapshot is all links into ``../../blobs``). Version-control and cache folders
(``.git``, ``.cache``, ``.huggingface``) are skipped.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from airlock.bundle.format.manifest import Source
from airlock.bundle.staging.sources.base import Collected, SourceFile, readme_license, safe_logical
from airlock.errors import SourceError
from airlock.store.layout import local_repo

SKIP_DIRS = frozenset({".git", ".cache", ".huggingface", "__pycache__"})
SKIP_FILES = frozenset({".DS_Store", ".gitattributes"})


def _regular(path: Path, *, where: str) -> None:
    try:
        st = path.stat()  # follows a link to a file
    except OSError as exc:
        raise SourceError(f"{where}: cannot read {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"{where}: {path} is not a regular file")


def walk_folder(root: Path, *, where: str) -> list[SourceFile]:
    """Every regular file under ``root`` with its logical path, sorted."""
    if not root.is_dir():
        raise SourceError(f"{where}: {root} is not a folder")
    files: list[SourceFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for d in list(dirnames):
            if d in SKIP_DIRS or (base / d).is_symlink():
                if (base / d).is_symlink() and d not in SKIP_DIRS:
                    raise SourceError(
                        f"{where}: {base / d} is a link to a folder; links to folders are not followed",
                        hint="copy the folder's files in, or point the spec at the real folder",
                    )
                dirnames.remove(d)
        for name in filenames:
            if name in SKIP_FILES:
                continue
            full = base / name
            logical = full.relative_to(root).as_posix()
            safe_logical(logical, where=where)
            _regular(full, where=where)
            files.append(SourceFile(path=logical, origin=full))
    files.sort(key=lambda f: f.path)
    if not files:
        raise SourceError(f"{where}: {root} holds no files")
    return files


def collect_folder(name: str, root: Path) -> Collected:
    where = f"model {name!r}"
    files = walk_folder(root, where=where)
    return Collected(
        kind="model",
        name=name,
        repo=local_repo(name),
        source=Source(type="local", path=str(root), revision="main"),
        files=tuple(files),
        license=readme_license(root),
    )


def collect_gguf(name: str, path: Path) -> Collected:
    where = f"model {name!r}"
    _regular(path, where=where)
    safe_logical(path.name, where=where)
    return Collected(
        kind="model",
        name=name,
        repo=local_repo(name),
        source=Source(type="gguf", path=str(path), revision="main"),
        files=(SourceFile(path=path.name, origin=path),),
    )
