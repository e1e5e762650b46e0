"""The store's folders, its lock, and where each blob already lives (so installs reuse, not copy).

Example::

    store = Store(Path("/srv/store"))
    with store.locked():
        store.find_blob("ab12...")   # a path holding that content, or None
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from airlock.common.fileio import is_disk_full, no_space, write_atomic
from airlock.errors import StoreError
from airlock.store import layout
from airlock.store.db import StoreDb


@dataclass(frozen=True)
class BlobLocation:
    """Where the store already holds a blob, and the size it must have there to count."""

    path: Path
    size: int


BlobIndex = dict[str, BlobLocation]  # sha256 -> where the store holds that content


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- paths -----------------------------------------------------------------------------------
    @property
    def hub(self) -> Path:
        return self.root / layout.STORE_HUB

    @property
    def state(self) -> Path:
        return self.root / layout.STORE_STATE

    @property
    def db_path(self) -> Path:
        return self.state / layout.STORE_DB

    def incoming(self, bundle: str) -> Path:
        return self.state / layout.STORE_INCOMING / bundle

    def bundle_dir(self, bundle: str) -> Path:
        return self.state / layout.STORE_BUNDLES / bundle

    def repo_dir(self, repo: str) -> Path:
        return self.hub / layout.repo_folder(repo)

    def model_blob(self, repo: str, sha256: str) -> Path:
        return self.repo_dir(repo) / "blobs" / sha256

    def wheel_path(self, name: str) -> Path:
        return self.root / layout.STORE_WHEELS / name

    def file_path(self, rel: str) -> Path:
        return self.root / layout.STORE_FILES / rel

    @property
    def images(self) -> Path:
        """The OCI image layout that holds every installed image (:mod:`airlock.registry.oci` reads it)."""
        return self.root / layout.STORE_IMAGES

    def image_blob(self, sha256: str) -> Path:
        return self.images / "blobs" / "sha256" / sha256

    def gguf_link(self, name: str) -> Path:
        return self.root / layout.STORE_GGUF / name

    # -- state -----------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Is there a store at ``root``? (``ensure``, i.e. the first install, makes one.)"""
        return self.state.is_dir()

    def require(self, *, hint: str | None = None) -> None:
        """Raise StoreError unless a store is at ``root``: reading a mistyped path must not look empty."""
        if self.exists():
            return
        if not self.root.exists():
            what = "no store there (the folder does not exist)"
        elif self.root.is_dir():
            what = f"not an airlock store (it has no {layout.STORE_STATE}/ folder)"
        else:
            what = "not an airlock store (it is a file)"
        raise StoreError(f"{self.root}: {what}", hint=hint)

    def load_db(self) -> StoreDb:
        return StoreDb.load(self.db_path)

    def save_db(self, db: StoreDb) -> None:
        write_atomic(self.db_path, db.to_bytes())

    def ensure(self) -> None:
        try:
            for d in (self.hub, self.state / layout.STORE_INCOMING, self.state / layout.STORE_BUNDLES):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if is_disk_full(exc):
                raise no_space(exc, self.root) from exc
            raise StoreError(f"{self.root}: cannot create the store: {exc.strerror}") from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock: one install (or inventory) at a time."""
        self.ensure()
        fd = os.open(self.state / layout.STORE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StoreError(
                    f"{self.root}: another install is using this store", hint="wait for it to finish"
                ) from exc
            yield
        finally:
            os.close(fd)

    def blob_index(self, db: StoreDb | None = None) -> BlobIndex:
        """Where each blob the index lists lives in the store (built once per install, not per blob)."""
        db = db or self.load_db()
        found: BlobIndex = {}
        for m in db.models:
            for f in m.files:
                found.setdefault(f.sha256, BlobLocation(self.model_blob(m.repo, f.sha256), f.size))
        for w in db.wheels:
            found.setdefault(w.sha256, BlobLocation(self.wheel_path(w.file), w.size))
        for pf in db.files:
            found.setdefault(pf.sha256, BlobLocation(self.file_path(pf.path), pf.size))
        for image in db.images:
            for f in image.files:
                found.setdefault(f.sha256, BlobLocation(self.image_blob(f.sha256), f.size))
        return found

    def find_blob(self, sha256: str, index: BlobIndex | None = None) -> Path | None:
        """A path in the store whose content is ``sha256`` (checked by size, not re-hashed), or None."""
        hit = (index if index is not None else self.blob_index()).get(sha256)
        if hit is None:
            return None
        try:
            st = os.stat(hit.path, follow_symlinks=False)
        except OSError:
            return None
        return hit.path if st.st_size == hit.size and not os.path.islink(hit.path) else None
