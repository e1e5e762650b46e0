"""/dev/shm for the spec's engines, free disk against a bundle, and a real store's files against its index."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from airlock.common.types import FrozenModel
from airlock.doctor.disk import check_disk, check_shm, check_store
from airlock.doctor.host import DiskSpace
from airlock.spec import Spec
from airlock.store.db import StoreDb, StoredFile, StoredModel
from airlock.store.store import Store
from unit.doctor.recorded_host import GIB, RecordedHost

MIB = 1 << 20


def vllm_spec(tp: int = 1) -> Spec:
    return Spec.model_validate(
        {
            "models": [
                {"name": "m", "hf": {"repo": "org/m"}, "engine": {"kind": "vllm", "tensor_parallel_size": tp}}
            ]
        }
    )


def test_shm_by_engine(host: RecordedHost) -> None:
    host.disks["/dev/shm"] = DiskSpace(64 * MIB, 64 * MIB)  # docker's default without --ipc=host
    small = check_shm(host, vllm_spec())
    assert small.status == "fail" and "remount,size=1G" in small.fix
    llama = Spec.model_validate({"models": [{"name": "g", "gguf": "/m.gguf"}]})
    assert check_shm(host, llama).status == "pass"
    host.disks["/dev/shm"] = DiskSpace(4 * GIB, 4 * GIB)
    assert check_shm(host, vllm_spec()).status == "pass"
    parallel = check_shm(host, vllm_spec(tp=2))
    assert parallel.status == "warn" and "tensor/pipeline parallel" in parallel.detail


def make_store(root: Path, content: bytes) -> tuple[Store, StoreDb]:
    store = Store(root)
    store.ensure()
    sha = hashlib.sha256(content).hexdigest()
    blob = store.model_blob("org/m", sha)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(content)
    model = StoredModel(
        name="m", repo="org/m", revision="main", commit="c" * 40, source="hf",
        files=[StoredFile(path="model.safetensors", size=len(content), sha256=sha)],
        bundle="b" * 64, installed="2025-03-11T09:14:02Z",
    )  # fmt: skip
    db = StoreDb(models=[model])
    store.save_db(db)
    return store, StoreDb.load(store.db_path)


def test_store_sizes_and_hashes(tmp_path: Path) -> None:
    store, db = make_store(tmp_path / "store", b"weights" * 1000)
    assert check_store(store, db, deep=False, progress=None).status == "pass"
    assert check_store(store, db, deep=True, progress=None).status == "pass"
    blob = store.model_blob("org/m", db.models[0].files[0].sha256)
    blob.write_bytes(b"W" + blob.read_bytes()[1:])  # same size, other bytes
    assert check_store(store, db, deep=False, progress=None).status == "pass"
    deep = check_store(store, db, deep=True, progress=None)
    assert deep.status == "fail" and "org/m/model.safetensors: its SHA-256" in deep.detail
    blob.write_bytes(b"short")
    quick = check_store(store, db, deep=False, progress=None)
    assert quick.status == "fail" and "5 bytes, the index says 7,000" in quick.detail
    blob.unlink()
    assert "missing" in check_store(store, db, deep=False, progress=None).detail
    assert check_store(Store(tmp_path / "none"), None, deep=False, progress=None).status == "skip"


class _Blob(FrozenModel):
    sha256: str
    size: int
    carried: bool = True


def write_bundle(folder: Path, blobs: list[_Blob]) -> Path:
    volume = folder / "vol-0001"
    volume.mkdir(parents=True)
    manifest = {"format": "airlock-bundle/1", "blobs": [b.model_dump() for b in blobs]}
    (volume / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_disk_against_a_bundle(tmp_path: Path, host: RecordedHost) -> None:
    store, db = make_store(tmp_path / "store", b"x" * 100)
    held = db.models[0].files[0].sha256
    bundle = write_bundle(
        tmp_path / "bundle",
        [
            _Blob(sha256=held, size=100),
            _Blob(sha256="1" * 64, size=30 * GIB),
            _Blob(sha256="2" * 64, size=GIB, carried=False),
        ],
    )  # only the 30 GiB blob is new to the store: the first is held, the last was left out by --base
    host.disks[str(tmp_path)] = DiskSpace(100 * GIB, 20 * GIB)
    disk, vs = check_disk(host, store, db, bundle)
    assert disk.status == "pass"
    assert vs.status == "fail" and "writes 32.2 GB (1 blobs not in the store)" in vs.detail
    host.disks[str(tmp_path)] = DiskSpace(100 * GIB, 31 * GIB)
    assert check_disk(host, store, db, bundle / "vol-0001")[1].status == "warn"
    host.disks[str(tmp_path)] = DiskSpace(1000 * GIB, 40 * GIB)
    assert [c.status for c in check_disk(host, store, db, bundle)] == ["warn", "pass"]  # 4% free
    missing = check_disk(host, store, db, tmp_path)[1]
    assert missing.status == "fail" and "no manifest.json" in missing.detail
