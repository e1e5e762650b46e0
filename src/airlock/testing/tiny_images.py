"""Tiny OCI images for tests, written with the standard library only (tarfile, gzip, hashlib, json).

Layers are gzip tar layers (``application/vnd.oci.image.layer.v1.tar+gzip``) with fixed bytes: every
mtime, uid and gzip header is zero and entries are sorted, so the same files always give the same
layer digest, and two versions of an image that share files in a layer share that layer's blob.
``skopeo inspect oci:DIR:REF`` and ``umoci`` read what this writes (tests/unit/registry checks it).

Example::

    digest = write_image(tmp / "layout", "app:1", [{"etc/app.conf": b"a=1"}, {"bin/app": b"..."}])
    index, per_platform = write_index(tmp / "layout", "multi:1", {"linux/amd64": [...], "linux/arm64": [...]})
    write_oci_archive(tmp / "layout", tmp / "app.tar")
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _platform(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {platform!r} is not OS/ARCH or OS/ARCH/VARIANT")
    out = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def layer_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar of ``files`` (relative path -> content) with fixed metadata; parent folders
    get their own entries."""
    buf = io.BytesIO()
    dirs: set[str] = set()
    for name in files:
        parts = name.strip("/").split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(dirs | set(files)):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if name in dirs:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                data = files[name]
                info.mode = 0o755 if name.startswith(("bin/", "usr/bin/")) else 0o644
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def layer_blob(files: dict[str, bytes], *, compresslevel: int = 6) -> tuple[bytes, str]:
    """A gzip tar layer and its diff ID (the SHA-256 of the uncompressed tar), both deterministic."""
    raw = layer_tar(files)
    return gzip.compress(raw, compresslevel=compresslevel, mtime=0), _digest(raw)


def _put_blob(layout_dir: Path, data: bytes) -> dict[str, Any]:
    digest = _digest(data)
    path = layout_dir / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _init_layout(layout_dir: Path) -> None:
    (layout_dir / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    marker = layout_dir / "oci-layout"
    if not marker.exists():
        marker.write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    if not (layout_dir / "index.json").exists():
        (layout_dir / "index.json").write_bytes(_json({"schemaVersion": 2, "manifests": []}))


def _set_ref(layout_dir: Path, descriptor: dict[str, Any], ref_name: str) -> None:
    index = json.loads((layout_dir / "index.json").read_bytes())
    kept = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != ref_name]
    kept.append({**descriptor, "annotations": {REF_NAME: ref_name}})
    index["manifests"] = kept
    (layout_dir / "index.json").write_bytes(_json(index))


def _image_manifest(
    layout_dir: Path,
    layers: list[dict[str, bytes]],
    *,
    platform: str,
    env: dict[str, str] | None,
    labels: dict[str, str] | None,
    entrypoint: list[str] | None,
    cmd: list[str] | None,
    compresslevel: int,
) -> tuple[bytes, dict[str, Any]]:
    layer_descs = []
    diff_ids = []
    for files in layers:
        blob, diff_id = layer_blob(files, compresslevel=compresslevel)
        layer_descs.append({"mediaType": OCI_LAYER_GZIP, **_put_blob(layout_dir, blob)})
        diff_ids.append(diff_id)
    runtime: dict[str, Any] = {"Env": [f"{k}={v}" for k, v in (env or {}).items()]}
    if entrypoint is not None:
        runtime["Entrypoint"] = entrypoint
    if cmd is not None:
        runtime["Cmd"] = cmd
    if labels:
        runtime["Labels"] = labels
    config = {**_platform(platform), "config": runtime, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_desc = {"mediaType": OCI_CONFIG, **_put_blob(layout_dir, _json(config))}
    manifest = _json(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": layer_descs}
    )
    return manifest, {"mediaType": OCI_MANIFEST, **_put_blob(layout_dir, manifest)}


def write_image(
    layout_dir: Path,
    ref_name: str,
    layers: list[dict[str, bytes]],
    *,
    platform: str = "linux/amd64",
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    compresslevel: int = 6,
) -> str:
    """Write a one-platform image into the OCI layout at ``layout_dir`` (created if needed), named
    ``ref_name`` in its index.json (an older image of that name is replaced); return its manifest digest.

    ``layers`` are the layers' files, bottom first (relative path -> content).
    """
    _init_layout(layout_dir)
    _, desc = _image_manifest(
        layout_dir,
        layers,
        platform=platform,
        env=env,
        labels=labels,
        entrypoint=entrypoint,
        cmd=cmd,
        compresslevel=compresslevel,
    )
    _set_ref(layout_dir, desc, ref_name)
    return str(desc["digest"])


def write_index(
    layout_dir: Path,
    ref_name: str,
    platforms: dict[str, list[dict[str, bytes]]],
    *,
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    compresslevel: int = 6,
) -> tuple[str, dict[str, str]]:
    """Write a multi-platform image (an OCI image index over one manifest per platform) named
    ``ref_name``; return the index digest and each platform's manifest digest."""
    _init_layout(layout_dir)
    entries = []
    digests: dict[str, str] = {}
    for platform, layers in platforms.items():
        _, desc = _image_manifest(
            layout_dir,
            layers,
            platform=platform,
            env=env,
            labels=labels,
            entrypoint=entrypoint,
            cmd=cmd,
            compresslevel=compresslevel,
        )
        entries.append({**desc, "platform": _platform(platform)})
        digests[platform] = str(desc["digest"])
    index = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    desc = {"mediaType": OCI_INDEX, **_put_blob(layout_dir, index)}
    _set_ref(layout_dir, desc, ref_name)
    return str(desc["digest"]), digests


def write_oci_archive(layout_dir: Path, tar_path: Path) -> None:
    """Write the layout at ``layout_dir`` as an ``oci-archive`` tar (the layout's files at the tar's
    root, sorted, with fixed metadata)."""
    names = sorted(p for p in layout_dir.rglob("*"))
    with tarfile.open(tar_path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in names:
            rel = path.relative_to(layout_dir).as_posix()
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o644
                info.size = path.stat().st_size
                with path.open("rb") as f:
                    tar.addfile(info, f)
