"""Bundle throughput: pack, verify and install beside a cold read, sha256sum and tar | gzip, in one run.

Generated data: a model folder of bf16 safetensors shards (values drawn like trained weights, so
they compress as real checkpoints do), ``--size`` bytes in all. Each measured step starts with a
cold page cache (``sync; echo 3 > /proc/sys/vm/drop_caches``, root only; otherwise the table says
"warm"). Steps:

    dd            dd bs=1M > /dev/null, shard by shard
    cat           coreutils cat > /dev/null (the "cold read" of the goals is the faster of dd and cat:
                  what the disk gives)
    sha256sum     coreutils sha256sum of every shard
    sha256 cores  Python's hashlib over bytes in memory on --workers threads: what the cores can hash
                  (no disk), the other limit verify has
    tar | gzip    tar -c | gzip (level 6, the `docker save | gzip` habit) > a file (only with --gzip:
                  minutes per GB on a small machine)
    cp + sync     cp -r of the folder, then sync: what copying alone costs here (pack's and install's floor)
    pack          airlock pack into one volume, signed with a throwaway key
    verify        airlock verify of that bundle
    install       airlock install of that bundle into an empty store

Goals (issue 10): pack and install at least 0.9x cp + sync; verify at least 0.9x the lower of the
cold read and the cores' SHA-256 rate. Pack's own read counts are printed too (Linux's /proc/self/io):
how many times the data passed through read calls, and how much came from the disk. Pack computes two
SHA-256 per byte of a file larger than a chunk (the blob's and its chunks'), so on few cores it runs
at most at half the "sha256 cores" rate.

and, on one shard, zstd (as pack writes it: level 1, tuned for weights; all cores) with and without byte grouping: the
size saved and the throughput, beside the medium it would save time on.

    python benchmarks/bundle_throughput.py [--size 2GiB] [--dir /var/tmp/airlock-bench] [--workers N] [--gzip]

Prints a table and writes JSON (default benchmarks/results/bundle_throughput.json). The machine may be
shared with other work: read the numbers as a snapshot of this run, not as a property of the code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import ByteSize, TypeAdapter

from airlock.bundle.airgap.install import InstallOptions, install
from airlock.bundle.airgap.verify import VerifyOptions, verify
from airlock.bundle.format.compress import LEVEL, compressor, group_bytes
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import generate_keypair
from airlock.bundle.staging.pack import PackOptions, pack
from airlock.common.threads import default_workers

ROOT = Path(__file__).resolve().parent.parent
SHARD = 512 * 1024 * 1024
MIB = 1024 * 1024


@dataclass
class Step:
    name: str
    seconds: float
    bytes: int
    cold: bool
    note: str = ""

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


def drop_caches() -> bool:
    """Empty the page cache (root only); False when not allowed, and the step is then warm."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def timed(name: str, nbytes: int, fn, note: str = "") -> Step:  # type: ignore[no-untyped-def]
    cold = drop_caches()
    started = time.perf_counter()
    fn()
    return Step(name, time.perf_counter() - started, nbytes, cold, note)


def write_shard(path: Path, nbytes: int, seed: int) -> None:
    """A safetensors file of one BF16 tensor, values ~ N(0, 0.02) like trained weights."""
    rng = np.random.default_rng(seed)
    values = nbytes // 2
    header = json.dumps({"w": {"dtype": "BF16", "shape": [values], "data_offsets": [0, values * 2]}}).encode()
    header += b" " * (-len(header) % 8)
    with path.open("wb") as fh:
        fh.write(len(header).to_bytes(8, "little") + header)
        step = 32 * MIB
        for start in range(0, values, step):
            n = min(step, values - start)
            f32 = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
            fh.write((f32.view(np.uint32) >> 16).astype("<u2").tobytes())


def generate(folder: Path, total: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    shards = []
    count = max(1, -(-total // SHARD))
    for i in range(count):
        size = min(SHARD, total - i * SHARD)
        path = folder / f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        if not path.exists():  # kept from an earlier run with --keep
            write_shard(path, size, seed=i)
        shards.append(path)
    return shards


def run(cmd: str) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)


def proc_io() -> dict[str, int]:
    """This process's I/O counters (Linux): rchar (bytes through read calls), read_bytes (from disk)."""
    try:
        lines = Path("/proc/self/io").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split(": ") for line in lines)}


def hash_in_memory(total: int, workers: int) -> None:
    """SHA-256 of ``total`` bytes held in memory, split over ``workers`` threads (hashlib frees the GIL)."""
    block = np.random.default_rng(0).integers(0, 256, MIB, dtype=np.uint8).tobytes()
    each = max(1, total // MIB // workers)

    def one(_: int) -> str:
        h = hashlib.sha256()
        for _ in range(each):
            h.update(block)
        return h.hexdigest()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(workers)))


def zstd_sizes(shard: Path, workers: int) -> dict[str, float]:
    """zstd level 1 (as pack) over 16 MiB frames on ``workers`` threads, with and without byte grouping."""
    frame = 16 * MIB
    data = shard.read_bytes()[: 256 * MIB]
    frames = [data[i : i + frame] for i in range(0, len(data), frame)]
    out: dict[str, float] = {"sample_bytes": len(data)}
    for label, group in (("plain", 1), ("grouped", 2)):
        started = time.perf_counter()

        def one(raw: bytes, group: int = group) -> int:
            return len(compressor().compress(group_bytes(raw, group)))

        with ThreadPoolExecutor(max_workers=workers) as pool:
            size = sum(pool.map(one, frames))
        seconds = time.perf_counter() - started
        out[f"{label}_ratio"] = size / len(data)
        out[f"{label}_gbps"] = len(data) / seconds / 1e9
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2GiB", help="data to generate (e.g. 2GiB, 8GiB)")
    parser.add_argument("--dir", type=Path, default=None, help="work folder on the disk to measure")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "bundle_throughput.json"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated data and outputs")
    parser.add_argument("--gzip", action="store_true", help="also time tar | gzip (slow)")
    args = parser.parse_args()
    total = int(TypeAdapter(ByteSize).validate_python(args.size))
    work = args.dir or Path(tempfile.mkdtemp(prefix="airlock-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "model"
    print(f"generating {total / 1e9:.2f} GB of bf16 safetensors in {data} ...", flush=True)
    shards = generate(data, total)
    nbytes = sum(p.stat().st_size for p in data.iterdir())
    spec = work / "airlock.yaml"
    spec.write_text(f"models:\n  - name: bench\n    path: {data}\n    engine: {{kind: vllm}}\n")
    key = work / "bench.key"
    if not key.exists():
        generate_keypair(key)
    for old in ("bundle", "store"):
        shutil.rmtree(work / old, ignore_errors=True)
    (work / "data.tar.gz").unlink(missing_ok=True)
    files = " ".join(str(p) for p in sorted(data.iterdir()))

    dd = " && ".join(f"dd if={p} of=/dev/null bs=1M status=none" for p in sorted(data.iterdir()))
    hashed = (nbytes // MIB // args.workers) * MIB * args.workers
    steps = [
        timed("dd", nbytes, lambda: run(dd), "bs=1M"),
        timed("cat", nbytes, lambda: run(f"cat {files} > /dev/null")),
        timed("sha256sum", nbytes, lambda: run(f"sha256sum {files} > /dev/null"), "coreutils"),
        timed(
            "sha256 cores",
            hashed,
            lambda: hash_in_memory(hashed, args.workers),
            f"hashlib, {args.workers} threads, in memory",
        ),
    ]
    if args.gzip:
        steps.append(
            timed(
                "tar | gzip",
                nbytes,
                lambda: run(f"tar -C {work} -cf - model | gzip > {work}/data.tar.gz"),
                "gzip -6",
            )
        )
    steps.append(timed("cp + sync", nbytes, lambda: run(f"cp -r {data} {work}/copy && sync"), "copy alone"))
    shutil.rmtree(work / "copy", ignore_errors=True)
    (work / "data.tar.gz").unlink(missing_ok=True)

    pack_io: dict[str, int] = {}

    def do_pack() -> None:
        before = proc_io()
        pack(PackOptions(spec_path=spec, out=work / "bundle", sign_key=key, workers=args.workers))
        pack_io.update({k: v - before.get(k, 0) for k, v in proc_io().items()})

    steps.append(timed("airlock pack", nbytes, do_pack, f"{args.workers} workers, hash + copy"))
    volumes = VolumeSet([work / "bundle"], trust=[Path(f"{key}.pub")], workers=args.workers)
    steps.append(
        timed(
            "airlock verify",
            nbytes,
            lambda: verify(VerifyOptions(volumes)).raise_for_problems(),
            f"{args.workers} workers",
        )
    )
    steps.append(
        timed(
            "airlock install",
            nbytes,
            lambda: install(InstallOptions(volumes, store=work / "store")),
            f"{args.workers} workers, verify + copy",
        )
    )
    print("measuring zstd with and without byte grouping on one shard ...", flush=True)
    zstd = zstd_sizes(shards[0], args.workers)

    by = {s.name: s for s in steps}
    cold = max(by["dd"].gbps, by["cat"].gbps)
    cores = by["sha256 cores"].gbps
    copy = by["cp + sync"].gbps
    print()
    print(
        f"cold read (the faster of dd and cat): {cold:.3f} GB/s; the cores' SHA-256: {cores:.3f} GB/s; "
        f"cp + sync: {copy:.3f} GB/s"
    )
    print(f"{'step':<16} {'GB/s':>7} {'seconds':>8}  {'x cold read':>10}  {'x cp+sync':>9}  cache  note")
    for s in steps:
        print(
            f"{s.name:<16} {s.gbps:7.3f} {s.seconds:8.2f}  {s.gbps / cold:10.2f}  {s.gbps / copy:9.2f}  "
            f"{'cold' if s.cold else 'WARM':5}  {s.note}"
        )
    verify_floor = min(cold, cores)
    goals = {
        "pack >= 0.9x cp + sync": by["airlock pack"].gbps >= 0.9 * copy,
        "install >= 0.9x cp + sync": by["airlock install"].gbps >= 0.9 * copy,
        f"verify >= 0.9x min(cold read, cores' SHA-256) = {verify_floor:.3f} GB/s": by["airlock verify"].gbps
        >= 0.9 * verify_floor,
    }
    print()
    for goal, met in goals.items():
        print(f"  {'met ' if met else 'MISSED'}  {goal}")
    if pack_io:
        print(
            f"  pack read {pack_io['rchar'] / nbytes:.2f}x the data through read calls, "
            f"{pack_io['read_bytes'] / nbytes:.2f}x from the disk (a second read the page cache holds is not)"
        )
    print(
        f"  ratios: pack {by['airlock pack'].gbps / copy:.2f}x cp + sync, install "
        f"{by['airlock install'].gbps / copy:.2f}x cp + sync, verify {by['airlock verify'].gbps / cold:.2f}x cold "
        f"read and {by['airlock verify'].gbps / cores:.2f}x the cores' SHA-256"
    )
    print()
    print(
        f"zstd -{LEVEL} on {zstd['sample_bytes'] / 1e6:.0f} MB of bf16: plain {zstd['plain_ratio']:.3f} of the size "
        f"({zstd['plain_gbps']:.2f} GB/s), byte-grouped {zstd['grouped_ratio']:.3f} ({zstd['grouped_gbps']:.2f} GB/s)"
    )
    saved = 1 - zstd["grouped_ratio"]
    # Packing compresses first and the bytes go to the medium later: compressing B bytes costs
    # B / C seconds and saves saved * B / W of writing, so it pays when W < saved * C.
    break_even = saved * zstd["grouped_gbps"] * 1e3
    zstd["break_even_mbps"] = break_even
    print(
        f"  it saves {saved:.0%} of bf16 bytes and pays on media that write slower than {break_even:.0f} MB/s "
        f"(USB sticks, discs: --compress auto), not on disks; the default stays --compress none"
    )
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "bytes": nbytes,
        "cold_read_gbps": cold,
        "sha256_cores_gbps": cores,
        "cp_sync_gbps": copy,
        "workers": args.workers,
        "steps": [{**asdict(s), "gbps": s.gbps} for s in steps],
        "goals": goals,
        "pack_io": pack_io,
        "zstd": zstd,
        "note": "the machine may be shared: a snapshot of this run",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
