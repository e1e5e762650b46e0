"""Image delta: bytes a second image version carries with --base, and push time beside skopeo, in one run.

Generated data: two versions of one image in an OCI layout (:mod:`airlock.testing.tiny_images`).
Both share ``--layers`` base layers of ``--layer-mb`` MB each; only the top layer (``--top-mb`` MB)
differs. Layer contents are random bytes from a fixed seed (incompressible, as most of a real
image's bytes are after gzip), so the sizes are what they say and every run builds the same layers.

Bytes carried (the goal: only changed layers cross):

    v1 bundle          airlock pack of v1 (full), signed with a throwaway key
    v2 with --base     airlock pack of v2 against the inventory of a store v1 was installed into
    v2 docker save     skopeo copy oci:DIR:REF docker-archive:FILE (what `docker save` writes)

Push time (the goal: at least as fast as skopeo), each ``--repeat`` times into a fresh registry
(Debian's docker-registry on 127.0.0.1; its start is not timed); the median is reported:

    airlock push       the push part of `airlock install --registry`: place_images from the store
                       v1 was installed into (blobs HEAD-checked, uploaded in parallel, manifest last)
    skopeo copy        skopeo copy --dest-tls-verify=false oci:DIR:REF docker://HOST/REPO:TAG (its
                       process start is in the time: it is what an operator would run)

The page cache is never dropped here: every step reads warm data ("warm cache" in the output).
Loopback only; the machine may be shared with other work: read the numbers as a snapshot of this run.

    python benchmarks/image_delta.py [--layers 5] [--layer-mb 64] [--top-mb 8] [--repeat 3]
                                     [--dir /var/tmp/airlock-image-bench] [--json-out FILE] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from airlock.bundle.airgap.images import ImageTargets, place_images
from airlock.bundle.airgap.install import InstallOptions, install
from airlock.bundle.format.inventory import make_inventory, write_inventory
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import generate_keypair, load_private_key
from airlock.bundle.staging.pack import PackOptions, PackResult, pack
from airlock.registry.push import RegistryTarget
from airlock.store.store import Store
from airlock.testing.registry import RunningRegistry
from airlock.testing.tiny_images import write_image

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000
REPOSITORY = "bench"  # the layout's image names are bench:1 and bench:2


@dataclass(frozen=True)
class Carried:
    name: str
    bytes: int
    note: str


@dataclass(frozen=True)
class Push:
    name: str
    runs_s: list[float]
    bytes: int
    note: str

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)

    @property
    def mbps(self) -> float:
        return self.bytes / self.median_s / MB if self.median_s > 0 else 0.0


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build_layout(layout: Path, layers: int, layer_mb: int, top_mb: int) -> tuple[str, str]:
    """bench:1 and bench:2 in one OCI layout: the same base layers, a different top layer."""
    base = [{f"opt/layer{i}/data.bin": random.Random(i).randbytes(layer_mb * MB)} for i in range(layers)]
    digests = []
    for version in (1, 2):
        top = {
            "app/version": str(version).encode(),
            "app/data.bin": random.Random(1000 + version).randbytes(top_mb * MB),
        }
        # gzip level 1: the bytes are incompressible anyway, and level 6 only makes generating slower
        digests.append(write_image(layout, f"{REPOSITORY}:{version}", [*base, top], compresslevel=1))
    return digests[0], digests[1]


def image_bytes(layout: Path, digest: str) -> int:
    """The image's manifest, config and layers: what a push sends."""
    manifest = json.loads((layout / "blobs/sha256" / digest.removeprefix("sha256:")).read_bytes())
    blobs = [manifest["config"], *manifest["layers"]]
    return sum(int(b["size"]) for b in blobs) + len(json.dumps(manifest))


def do_pack(work: Path, spec: Path, out: Path, key: Path, base: Path | None) -> PackResult:
    return pack(
        PackOptions(
            spec_path=spec,
            out=out,
            sign_key=key,
            base=base,
            trust=(Path(f"{key}.pub"),) if base is not None else (),
            image_cache=work / "image-cache",
        )
    )


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", *args], check=True, stdout=subprocess.DEVNULL)


def time_pushes(work: Path, store: Store, layout: Path, repeat: int) -> tuple[list[float], list[float]]:
    """Each round pushes v1 into two fresh registries, one with airlock and one with skopeo; the
    order alternates between rounds so neither always runs first."""
    db = store.load_db()
    images = [i for i in db.images if i.tag == "1"]
    ours: list[float] = []
    theirs: list[float] = []
    for n in range(repeat):

        def airlock_push(n: int = n) -> float:
            with RunningRegistry(work / f"reg-airlock-{n}") as reg:
                target = ImageTargets(registry=RegistryTarget(f"http://{reg.host}"))
                started = time.perf_counter()
                (placed,) = place_images(store, images, target)
                seconds = time.perf_counter() - started
                if placed.skipped_blobs:
                    raise RuntimeError(f"a fresh registry already had {placed.skipped_blobs} blobs")
            shutil.rmtree(work / f"reg-airlock-{n}")
            return seconds

        def skopeo_push(n: int = n) -> float:
            with RunningRegistry(work / f"reg-skopeo-{n}") as reg:
                started = time.perf_counter()
                skopeo(
                    "copy",
                    "--quiet",
                    "--dest-tls-verify=false",
                    f"oci:{layout}:{REPOSITORY}:1",
                    f"docker://{reg.host}/{REPOSITORY}:1",
                )
                seconds = time.perf_counter() - started
            shutil.rmtree(work / f"reg-skopeo-{n}")
            return seconds

        if n % 2 == 0:
            ours.append(airlock_push())
            theirs.append(skopeo_push())
        else:
            theirs.append(skopeo_push())
            ours.append(airlock_push())
        print(f"  round {n + 1}: airlock {ours[-1]:.2f} s, skopeo {theirs[-1]:.2f} s", flush=True)
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--layers", type=int, default=5, help="shared base layers")
    parser.add_argument("--layer-mb", type=int, default=64, help="MB of each base layer")
    parser.add_argument("--top-mb", type=int, default=8, help="MB of the top layer, the one v2 changes")
    parser.add_argument("--repeat", type=int, default=3, help="push rounds (the median is reported)")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a new one in /var/tmp)")
    parser.add_argument("--json-out", type=Path, default=ROOT / "benchmarks/results/image_delta.json")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.layers < 1 or args.layer_mb < 1 or args.top_mb < 1 or args.repeat < 1:
        parser.error("--layers, --layer-mb, --top-mb and --repeat must be at least 1")
    for tool in ("skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (Debian packages skopeo and docker-registry)")

    work = args.dir or Path(tempfile.mkdtemp(prefix="airlock-image-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    for old in ("layout", "image-cache", "b1", "b2", "store", "v2.docker.tar", "inventory.json"):
        path = work / old
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for path in work.glob("reg-*"):
        shutil.rmtree(path)
    try:
        report = measure(work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json_out}")


def measure(work: Path, args: argparse.Namespace) -> dict[str, object]:
    layout = work / "layout"
    total_mb = args.layers * args.layer_mb + args.top_mb
    print(
        f"building bench:1 and bench:2 ({args.layers} x {args.layer_mb} MB shared + {args.top_mb} MB top, "
        f"{total_mb} MB each) in {layout} ...",
        flush=True,
    )
    v1, v2 = build_layout(layout, args.layers, args.layer_mb, args.top_mb)
    key = work / "bench.key"
    if not key.exists():
        generate_keypair(key)
    specs = {}
    for version in (1, 2):
        specs[version] = work / f"v{version}.yaml"
        specs[version].write_text(f"images:\n  - oci:{layout}:{REPOSITORY}:{version}\n")

    print("pack v1, install it, inventory, pack v2 --base inventory.json ...", flush=True)
    b1 = do_pack(work, specs[1], work / "b1", key, None)
    volumes = VolumeSet([work / "b1"], trust=[Path(f"{key}.pub")])
    install(InstallOptions(volumes, store=work / "store"))
    store = Store(work / "store")
    inventory = work / "inventory.json"
    write_inventory(make_inventory(store), inventory, key=load_private_key(key))
    b2 = do_pack(work, specs[2], work / "b2", key, inventory)
    print("skopeo copy v2 to docker-archive (docker save) ...", flush=True)
    archive = work / "v2.docker.tar"
    skopeo("copy", "--quiet", f"oci:{layout}:{REPOSITORY}:2", f"docker-archive:{archive}:{REPOSITORY}:2")
    carried = [
        Carried(
            "v1 bundle (full)", folder_bytes(work / "b1"), f"{b1.blobs} blobs (manifest, config, layers)"
        ),
        Carried(
            "v2 bundle, --base",
            folder_bytes(work / "b2"),
            f"{b2.blobs - b2.skipped_blobs} of {b2.blobs} blobs carried, {b2.skipped_blobs} left out "
            f"({b2.skipped_bytes / MB:.0f} MB)",
        ),
        Carried("v2 docker save", archive.stat().st_size, "skopeo docker-archive (uncompressed layers)"),
    ]

    print(f"push v1 into fresh registries, {args.repeat} rounds ...", flush=True)
    nbytes = image_bytes(layout, v1)
    ours, theirs = time_pushes(work, store, layout, args.repeat)
    pushes = [
        Push("airlock push", ours, nbytes, "place_images from the store (install --registry)"),
        Push("skopeo copy", theirs, nbytes, "oci:DIR -> docker://, one process"),
    ]

    by_carried = {c.name: c for c in carried}
    delta = by_carried["v2 bundle, --base"].bytes
    save = by_carried["v2 docker save"].bytes
    full = by_carried["v1 bundle (full)"].bytes
    top_bytes = args.top_mb * MB
    ratio = pushes[1].median_s / pushes[0].median_s if pushes[0].median_s > 0 else 0.0
    goals = {
        # the changed top layer plus the manifest, config and bundle metadata; none of the base layers
        "only changed layers cross (every shared layer left out)": b2.skipped_blobs >= args.layers
        and delta < top_bytes + args.layer_mb * MB,
        "push at least as fast as skopeo": ratio >= 1.0,
    }

    console = Console(width=120)
    console.print()
    table = Table(title=f"bytes carried: image of {total_mb} MB, v2 changes the {args.top_mb} MB top layer")
    for col in ("what", "MB", "x v2 docker save", "note"):
        table.add_column(col, justify="right" if col in ("MB", "x v2 docker save") else "left")
    for c in carried:
        table.add_row(c.name, f"{c.bytes / MB:.1f}", f"{c.bytes / save:.3f}", c.note)
    console.print(table)
    table = Table(title=f"push v1 ({nbytes / MB:.0f} MB) into a fresh registry on 127.0.0.1, warm cache")
    for col in ("what", "median s", "MB/s", "runs s", "note"):
        table.add_column(col, justify="left" if col in ("what", "note") else "right")
    for p in pushes:
        runs = " ".join(f"{s:.2f}" for s in p.runs_s)
        table.add_row(p.name, f"{p.median_s:.2f}", f"{p.mbps:.0f}", runs, p.note)
    console.print(table)
    console.print(f"airlock push is {ratio:.2f}x the speed of skopeo copy (skopeo's median / airlock's)")
    console.print("cache: warm (the page cache is not dropped here)")
    for goal, met in goals.items():
        console.print(f"  {'met   ' if met else 'MISSED'}  {goal}")
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "image": {
            "layers": args.layers,
            "layer_mb": args.layer_mb,
            "top_mb": args.top_mb,
            "v1": v1,
            "v2": v2,
            "v1_bytes": nbytes,
        },
        "carried": [asdict(c) for c in carried],
        "v2_delta_over_docker_save": delta / save,
        "v2_delta_over_v1_full": delta / full,
        "pushes": [{**asdict(p), "median_s": p.median_s, "mbps": p.mbps} for p in pushes],
        "push_speed_over_skopeo": ratio,
        "goals": goals,
        "cache": "warm",
        "note": "the machine may be shared: a snapshot of this run",
    }


if __name__ == "__main__":
    main()
