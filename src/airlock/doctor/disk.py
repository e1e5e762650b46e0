"""Space: /dev/shm for vLLM, free disk for the store and for a bundle about to be installed, and the
store's files against its index (sizes; ``--deep`` rehashes them).

vLLM's processes (tensor-parallel workers, NCCL, PyTorch's dataloader) share tensors through
/dev/shm; airlock runs its image with ``--ipc=host``, so the host's /dev/shm is what they get, and
docker's own default without it (64 MiB) is too small. llama.cpp does not use it.

A bundle's size is read from its ``manifest.json`` as plain JSON (``blobs``: ``sha256``, ``size``,
``carried``): doctor is a stage and may not import ``airlock.bundle``; it only adds sizes, and
``airlock verify`` checks the manifest for real.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from airlock.common.fileio import hash_file, human
from airlock.common.progress import Meter, ProgressSink
from airlock.common.threads import default_workers
from airlock.doctor.host import Host
from airlock.doctor.model import Check, Status
from airlock.spec import Spec, VllmEngineSpec
from airlock.store.db import StoreDb
from airlock.store.store import Store

GIB = 1 << 30
SHM_VLLM = 1 * GIB  # the least /dev/shm a vLLM engine is given here (NVIDIA's containers ask for 1 GiB)
SHM_PARALLEL = 8 * GIB  # tensor/pipeline parallel: NCCL buffers per worker pair
SHM = "/dev/shm"  # noqa: S108 - the host's shared memory, measured, never written
LOW_FREE = 0.05  # a store filesystem with less than this share free warns


def shm_needed(spec: Spec | None) -> tuple[int, str]:
    """The /dev/shm the spec's engines need, and why (0 when they need none)."""
    if spec is None:
        return SHM_VLLM, "vLLM needs at least 1 GiB (no spec given: assuming a vLLM engine)"
    vllm = [m for m in spec.models if isinstance(m.engine, VllmEngineSpec)]
    if not vllm:
        return 0, "the spec's engines (llama.cpp, remote) do not use /dev/shm"
    parallel = [
        m.name
        for m in vllm
        if isinstance(m.engine, VllmEngineSpec)
        and (m.engine.tensor_parallel_size or 1) * (m.engine.pipeline_parallel_size or 1) > 1
    ]
    if parallel:
        return (
            SHM_PARALLEL,
            f"{', '.join(parallel)} run(s) tensor/pipeline parallel: NCCL wants 8 GiB or more",
        )
    return SHM_VLLM, f"vLLM ({', '.join(m.name for m in vllm)}) needs at least 1 GiB"


def check_shm(host: Host, spec: Spec | None) -> Check:
    needed, why = shm_needed(spec)
    space = host.disk(Path(SHM))
    if space is None:
        if needed == 0:
            return Check(SHM, "skip", f"no /dev/shm; {why}")
        return Check(SHM, "fail", f"no /dev/shm on this host; {why}", "mount a tmpfs on /dev/shm")
    detail = f"{human(space.total)} ({human(space.free)} free); {why}"
    if needed == 0 or space.free >= needed:
        return Check(SHM, "pass", detail)
    fix = f"mount -o remount,size={max(needed, 2 * space.total) // GIB}G /dev/shm (and in /etc/fstab)"
    status: Status = "fail" if space.free < SHM_VLLM or (spec is not None and needed == SHM_VLLM) else "warn"
    return Check(SHM, status, f"{detail}: too small", fix)


def bundle_manifest(path: Path) -> Path | None:
    """The manifest of a bundle folder (its first volume) or of one volume."""
    for candidate in (path / "manifest.json", path / "vol-0001" / "manifest.json"):
        if candidate.is_file():
            return candidate
    volumes = sorted(path.glob("vol-*/manifest.json")) if path.is_dir() else []
    return volumes[0] if volumes else None


def bundle_needs(manifest: dict[str, Any], have: set[str]) -> tuple[int, int]:
    """(bytes install would write, blobs): every carried blob the store does not already hold."""
    total = count = 0
    for blob in manifest.get("blobs") or []:
        if blob.get("carried", True) and blob.get("sha256") not in have:
            total += int(blob.get("size", 0))
            count += 1
    return total, count


def check_disk(host: Host, store: Store, db: StoreDb | None, bundle: Path | None) -> list[Check]:
    where = store.root
    space = host.disk(where)
    if space is None:
        return [Check("disk", "fail", f"cannot read free space at {where}", "check that the path is mounted")]
    checks = []
    detail = f"{human(space.free)} free of {human(space.total)} at {where}"
    if space.total and space.free < LOW_FREE * space.total:
        checks.append(
            Check(
                "disk",
                "warn",
                f"{detail}: less than {LOW_FREE:.0%} free",
                "free space (or move the store: --store) before installing more; engines write caches and logs too",
            )
        )
    else:
        checks.append(Check("disk", "pass", detail))
    if bundle is None:
        return checks
    manifest_path = bundle_manifest(bundle)
    if manifest_path is None:
        checks.append(
            Check(
                "disk vs bundle",
                "fail",
                f"{bundle}: no manifest.json (not a bundle or volume)",
                "check --bundle",
            )
        )
        return checks
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        have = set(store.blob_index(db).keys()) if db is not None else set()
        needed, blobs = bundle_needs(manifest, have)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        checks.append(
            Check(
                "disk vs bundle",
                "fail",
                f"{manifest_path}: cannot read it ({exc})",
                "run `airlock verify` on it",
            )
        )
        return checks
    what = (
        f"installing {manifest_path.parent} writes {human(needed)} ({blobs} blobs not in the store); {detail}"
    )
    if space.free < needed:
        checks.append(
            Check(
                "disk vs bundle",
                "fail",
                what,
                f"free {human(needed - space.free)} more at {where}, or install into another store (--store)",
            )
        )
    elif space.free < needed * 1.1:
        checks.append(
            Check("disk vs bundle", "warn", what + ": less than 10% to spare", "free more space first")
        )
    else:
        checks.append(Check("disk vs bundle", "pass", what))
    return checks


def store_files(store: Store, db: StoreDb) -> Iterator[tuple[str, Path, int, str]]:
    """(what, path, size, sha256) of every file the index lists, where the store keeps it."""
    for m in db.models:
        for f in m.files:
            yield f"{m.repo}/{f.path}", store.model_blob(m.repo, f.sha256), f.size, f.sha256
    for w in db.wheels:
        yield f"wheels/{w.file}", store.wheel_path(w.file), w.size, w.sha256
    for pf in db.files:
        yield f"files/{pf.path}", store.file_path(pf.path), pf.size, pf.sha256
    for image in db.images:
        for f in image.files:
            yield f"{image.reference} {f.path}", store.image_blob(f.sha256), f.size, f.sha256


def _size_problem(path: Path, size: int) -> str | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    return None if st.st_size == size else f"{st.st_size:,} bytes, the index says {size:,}"


def check_store(store: Store, db: StoreDb | None, *, deep: bool, progress: ProgressSink | None) -> Check:
    name = "store (hashes)" if deep else "store (sizes)"
    if db is None:
        return Check(name, "skip", f"no store at {store.root} yet (`airlock install` makes one)")
    files = list(store_files(store, db))
    if not files:
        return Check(name, "pass", f"{store.root}: the index lists no file")
    total = sum(size for _, _, size, _ in files)
    problems: list[str] = []
    for what, path, size, _ in files:
        problem = _size_problem(path, size)
        if problem:
            problems.append(f"{what}: {problem}")
    if deep and not problems:
        meter = Meter(progress, "hashing the store", total)

        def rehash(item: tuple[str, Path, int, str]) -> str | None:
            what, path, _, sha256 = item
            try:
                got = hash_file(path, on_bytes=meter).sha256
            except OSError as exc:
                return f"{what}: unreadable ({exc.strerror})"
            return (
                None
                if got == sha256
                else f"{what}: its SHA-256 is {got[:12]}..., the index says {sha256[:12]}..."
            )

        with ThreadPoolExecutor(max_workers=default_workers(), thread_name_prefix="airlock-doctor") as pool:
            problems = [p for p in pool.map(rehash, files) if p]
        meter.finish()
    checked = f"{len(files)} files, {human(total)}"
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return Check(
            name,
            "fail",
            f"{store.root}: {len(problems)} of {checked} do not match the index: "
            + "; ".join(problems[:3])
            + more,
            "install the bundles that carried them again (`airlock install DIR`); `airlock ls` lists them",
        )
    how = "hashed" if deep else "sizes match; --deep rehashes them"
    return Check(name, "pass", f"{store.root}: {checked} ({how})")
