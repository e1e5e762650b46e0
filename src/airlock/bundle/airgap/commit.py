"""The last step of an install: every blob verified, make the bundle visible in the store.

Blobs go to their places as hard links (:func:`~airlock.store.place.link_or_copy`), snapshots
appear whole, refs and GGUF links are replaced atomically, and the store's index is rewritten last.
The bundle's manifest, signature and its spec rewritten for the store are kept under
``.airlock/bundles/<id>/``: ``airlock serve --config`` that spec serves the bundle's models.

Example::

    committed = commit_bundle(store, db, opened, incoming_dir, store.blob_index(db))
    committed.spec_path   # STORE/.airlock/bundles/<id>/airlock.yaml
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airlock.bundle.format import layout
from airlock.bundle.format.manifest import Artifact, Manifest, utc_now
from airlock.bundle.format.reader import OpenBundle
from airlock.common.fileio import write_atomic
from airlock.errors import StoreError
from airlock.spec import parse_spec
from airlock.store import layout as store_layout
from airlock.store.db import (
    StoreDb,
    StoredBundle,
    StoredFile,
    StoredImage,
    StoredModel,
    StoredPlainFile,
    StoredWheel,
)
from airlock.store.place import link_or_copy, make_snapshot, symlink_atomic, write_ref
from airlock.store.store import BlobIndex, Store


@dataclass(frozen=True)
class InstalledModel:
    """A model as the store now serves it: its store repo id, commit and snapshot folder."""

    name: str
    repo: str
    commit: str
    path: Path


@dataclass
class Committed:
    models: list[InstalledModel] = field(default_factory=list)
    wheels: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    images: list[StoredImage] = field(default_factory=list)
    spec_path: Path | None = None
    notes: list[str] = field(default_factory=list)


def _source_of(sha: str, incoming: Path, store: Store, index: BlobIndex) -> Path:
    here = incoming / sha
    if here.exists():
        return here
    found = store.find_blob(sha, index)
    if found is None:
        raise StoreError(
            f"blob {sha[:12]} vanished from the store while installing", hint="run install again"
        )
    return found


def _commit_model(
    store: Store, artifact: Artifact, incoming: Path, index: BlobIndex, out: Committed
) -> StoredModel:
    repo, commit = artifact.repo, artifact.source.commit
    if repo is None or commit is None:
        raise StoreError(f"model {artifact.name!r}: the manifest gives no repo id or commit")
    repo_dir = store.repo_dir(repo)
    for f in artifact.files:
        link_or_copy(_source_of(f.sha256, incoming, store, index), repo_dir / "blobs" / f.sha256)
    snapshot = make_snapshot(repo_dir, commit, {f.path: f.sha256 for f in artifact.files})
    revision = artifact.source.revision or "main"
    if revision != commit:
        write_ref(repo_dir, revision, commit)
    for f in artifact.files:
        if f.path.lower().endswith(".gguf"):
            link = store.gguf_link(Path(f.path).name)
            symlink_atomic(
                str(
                    Path("..")
                    / store_layout.STORE_HUB
                    / store_layout.repo_folder(repo)
                    / "snapshots"
                    / commit
                    / f.path
                ),
                link,
            )
    out.models.append(InstalledModel(artifact.name, repo, commit, snapshot))
    return StoredModel(
        name=artifact.name,
        repo=repo,
        revision=revision,
        commit=commit,
        source=artifact.source.type,
        license=artifact.license,
        files=[StoredFile(path=f.path, size=f.size, sha256=f.sha256) for f in artifact.files],
        bundle="",
        installed="",
    )


def _commit_image(
    store: Store, artifact: Artifact, incoming: Path, index: BlobIndex, bundle: str, now: str
) -> StoredImage:
    """Link the image's blobs into the store's OCI layout and name it there (``repo:tag``)."""
    from airlock.registry.oci import Descriptor, OciLayout

    image = artifact.image
    if image is None:
        raise StoreError(f"image {artifact.name!r}: the manifest does not describe the image")
    layout = OciLayout.create(store.images)
    for f in artifact.files:
        layout.add_blob(f"sha256:{f.sha256}", _source_of(f.sha256, incoming, store, index))
    stored = StoredImage(
        reference=image.reference,
        repository=image.repository,
        tag=image.tag,
        digest=image.digest,
        index_digest=image.index_digest,
        media_type=image.media_type,
        platform=image.platform,
        size=image.size,
        cuda_version=image.cuda_version,
        nvidia_require_cuda=image.nvidia_require_cuda,
        vllm_version=image.vllm_version,
        files=[StoredFile(path=f.path, size=f.size, sha256=f.sha256) for f in artifact.files],
        bundle=bundle,
        installed=now,
    )
    size = next(f.size for f in artifact.files if f"sha256:{f.sha256}" == image.digest)
    layout.set_ref(Descriptor(media_type=image.media_type, digest=image.digest, size=size), stored.ref_name)
    return stored


def served_spec(manifest: Manifest, store: Path) -> dict[str, Any]:
    """The bundle's spec, rewritten to serve from ``store`` on this side.

    Local folders and GGUF files become ``hf: {repo: local/<name>, revision: <commit>}``; paths of
    the staging machine (engine binaries, Pythons) are dropped, so this side finds its own.
    """
    spec = copy.deepcopy(manifest.spec)
    spec["store"] = str(store)
    spec.pop("wheels", None)
    spec.pop("files", None)
    by_name = {a.name: a for a in manifest.artifacts if a.kind == "model"}
    for model in spec.get("models", []):
        artifact = by_name.get(model.get("name", ""))
        engine = model.get("engine") or {}
        for key in ("binary", "python"):
            engine.pop(key, None)
        if artifact is None or artifact.source.type not in ("local", "gguf"):
            continue
        model.pop("path", None)
        model.pop("gguf", None)
        model["hf"] = {"repo": artifact.repo, "revision": artifact.source.commit}
    return spec


def commit_bundle(
    store: Store, db: StoreDb, opened: OpenBundle, incoming: Path, index: BlobIndex
) -> Committed:
    manifest = opened.manifest
    out = Committed()
    now = utc_now()
    models = {(m.repo, m.commit, m.name): m for m in db.models}
    wheels = {w.file: w for w in db.wheels}
    files = {f.path: f for f in db.files}
    images = {i.reference: i for i in db.images}
    for artifact in manifest.artifacts:
        if artifact.kind == "image":
            image = _commit_image(store, artifact, incoming, index, opened.bundle, now)
            before = images.get(image.reference)
            if before is not None and before.digest == image.digest:
                image = image.model_copy(update={"targets": before.targets})
            images[image.reference] = image
            out.images.append(image)
        elif artifact.kind == "model":
            stored = _commit_model(store, artifact, incoming, index, out)
            models[(stored.repo, stored.commit, stored.name)] = stored.model_copy(
                update={"bundle": opened.bundle, "installed": now}
            )
        elif artifact.kind == "wheels":
            for f in artifact.files:
                if f.path in wheels and wheels[f.path].sha256 != f.sha256:
                    store.wheel_path(f.path).unlink(missing_ok=True)
                    out.notes.append(f"wheels/{f.path} was replaced by this bundle's (different) file")
                link_or_copy(_source_of(f.sha256, incoming, store, index), store.wheel_path(f.path))
                wheels[f.path] = StoredWheel(file=f.path, size=f.size, sha256=f.sha256, bundle=opened.bundle)
                out.wheels.append(f.path)
        else:
            for f in artifact.files:
                dest = store.file_path(f.path)
                old = files.get(f.path)
                if old is not None and old.sha256 != f.sha256:
                    dest.unlink(missing_ok=True)  # replaced below by the new content, atomically
                    out.notes.append(f"files/{f.path} was replaced by this bundle's version")
                link_or_copy(_source_of(f.sha256, incoming, store, index), dest)
                files[f.path] = StoredPlainFile(
                    path=f.path, size=f.size, sha256=f.sha256, bundle=opened.bundle
                )
                out.files.append(f.path)
    bundle_dir = store.bundle_dir(opened.bundle)
    write_atomic(bundle_dir / layout.MANIFEST, opened.manifest_bytes)
    for volume in opened.volumes.values():
        sig = volume.root / layout.SIGNATURE
        if sig.is_file() and not sig.is_symlink():
            write_atomic(bundle_dir / layout.SIGNATURE, sig.read_bytes())
            break
    if manifest.spec.get("models"):
        spec = served_spec(manifest, store.root)
        parse_spec(spec, source="the bundle's spec rewritten for the store")  # must still be valid
        out.spec_path = bundle_dir / store_layout.STORE_SPEC
        write_atomic(out.spec_path, yaml.safe_dump(spec, sort_keys=False).encode())
    bundles = [b for b in db.bundles if b.id != opened.bundle]
    bundles.append(
        StoredBundle(
            id=opened.bundle,
            created=manifest.created,
            installed=now,
            signed_by=opened.signed_by,
            airlock_version=manifest.airlock_version,
        )
    )
    store.save_db(
        StoreDb(
            bundles=bundles,
            models=list(models.values()),
            wheels=list(wheels.values()),
            files=list(files.values()),
            images=list(images.values()),
        )
    )
    return out
