"""The host's driver against the CUDA each image in the store needs.

An image's ``NVIDIA_REQUIRE_CUDA`` (recorded by pack, kept in the store's index) is what the NVIDIA
container toolkit checks before it starts a container: space-separated alternatives, each a
comma-separated list of constraints that must all hold (``cuda>=12.8 brand=tesla,driver>=535,driver<536``:
the driver runs CUDA 12.8, or it is a 535 datacenter driver that the image's forward-compatibility
libraries cover). ``cuda`` is the newest CUDA the driver runs (nvidia-smi's ``cuda_version``; else
derived from plan's driver table, ``plan/data/vllm_images.json``, which this module reads and does
not copy). An image with only ``CUDA_VERSION`` is held to that table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from airlock.doctor.gpus import GpuInfo
from airlock.doctor.model import Check
from airlock.store.db import StoreDb, StoredImage

_CONSTRAINT = re.compile(r"^(cuda|driver|brand|arch)(>=|<=|==|!=|=|<|>)(.+)$")


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def _drivers() -> dict[str, Any]:
    from airlock.plan.compat import images

    table: dict[str, Any] = images()["cuda_drivers"]
    return table


def native_driver(cuda: str) -> str | None:
    """The oldest driver that runs ``cuda`` (major.minor) natively, from plan's table."""
    native: dict[str, str] = _drivers()["native"]
    return native.get(".".join(cuda.split(".")[:2]))


def minor_compat_driver(cuda: str) -> str | None:
    """The oldest driver that runs ``cuda`` through CUDA minor-version compatibility."""
    compat: dict[str, str] = _drivers()["minor_compat"]
    return compat.get(cuda.split(".")[0])


def cuda_of_driver(driver: str) -> str | None:
    """The newest tabled CUDA this driver runs natively (when nvidia-smi did not say)."""
    native: dict[str, str] = _drivers()["native"]
    ok = [cuda for cuda, needs in native.items() if _key(driver) >= _key(needs)]
    return max(ok, key=_key) if ok else None


def brand_name(brand: str | None) -> str:
    """nvidia-smi's product_brand as the toolkit spells it: ``NVIDIA RTX`` -> ``nvidiartx``."""
    return re.sub(r"[^a-z]", "", (brand or "unknown").lower()) or "unknown"


@dataclass(frozen=True)
class HostCuda:
    driver: str
    cuda: str | None
    brand: str  # as the toolkit spells it
    arch: str | None = None  # compute capability, "9.0"


def _holds(constraint: str, host: HostCuda) -> bool:
    match = _CONSTRAINT.match(constraint.strip())
    if match is None:
        return False  # a constraint this reader does not know: not satisfied, said so by the caller
    key, op, want = match.groups()
    if key == "brand":
        equal = host.brand == want.lower()
        return equal if op in ("=", "==") else not equal if op == "!=" else False
    have_text = {"cuda": host.cuda, "driver": host.driver, "arch": host.arch}[key]
    if have_text is None:
        return False
    have, wanted = _key(have_text), _key(want)
    width = max(len(have), len(wanted))
    have, wanted = have + (0,) * (width - len(have)), wanted + (0,) * (width - len(wanted))
    return {
        "=": have == wanted,
        "==": have == wanted,
        "!=": have != wanted,
        "<": have < wanted,
        "<=": have <= wanted,
        ">": have > wanted,
        ">=": have >= wanted,
    }[op]


def requirement_met(require: str, host: HostCuda) -> str | None:
    """The alternative of ``NVIDIA_REQUIRE_CUDA`` this host meets, or None."""
    for alternative in require.split():
        if all(_holds(c, host) for c in alternative.split(",") if c):
            return alternative
    return None


def image_cuda(image: StoredImage) -> str | None:
    """The CUDA an image was built for: ``cuda>=X`` of its requirement, else its CUDA_VERSION."""
    if image.nvidia_require_cuda:
        match = re.search(r"(?:^|\s)cuda>=(\d+\.\d+)", image.nvidia_require_cuda)
        if match:
            return match.group(1)
    if image.cuda_version:
        return ".".join(image.cuda_version.split(".")[:2])
    return None


def check_image(image: StoredImage, host: HostCuda) -> Check:
    name = f"driver vs {image.reference}"
    cuda = image_cuda(image)
    native = native_driver(cuda) if cuda else None
    upgrade = f"upgrade the NVIDIA driver to {native} or newer" if native else "upgrade the NVIDIA driver"
    upgrade += f" (CUDA {cuda})" if cuda else ""
    runs = f"driver {host.driver} (CUDA {host.cuda or '?'}, brand {host.brand})"
    if image.nvidia_require_cuda:
        met = requirement_met(image.nvidia_require_cuda, host)
        if met is not None and met.startswith("cuda"):
            return Check(name, "pass", f"{runs} meets {met}")
        if met is not None:
            return Check(
                name,
                "pass",
                f"{runs} meets {met}: the image's CUDA forward-compatibility libraries run CUDA {cuda or '?'} "
                "on this datacenter driver",
            )
        compat = minor_compat_driver(cuda) if cuda else None
        if (
            compat
            and host.cuda
            and host.cuda.split(".")[0] == (cuda or "").split(".")[0]
            and (_key(host.driver) >= _key(compat))
        ):
            return Check(
                name,
                "fail",
                f"{runs} does not meet NVIDIA_REQUIRE_CUDA ({image.nvidia_require_cuda}): the container toolkit "
                f"refuses to start it; minor-version compatibility (driver >= {compat}) could run it",
                f"{upgrade}; or start it with NVIDIA_DISABLE_REQUIRE=1 (kernels compiled just in time may then fail)",
            )
        return Check(
            name,
            "fail",
            f"{runs} does not meet NVIDIA_REQUIRE_CUDA ({image.nvidia_require_cuda}): the container will not start",
            upgrade,
        )
    if cuda is None:
        return Check(
            name, "skip", "the image records no CUDA requirement (not a CUDA image, or not read at pack)"
        )
    compat = minor_compat_driver(cuda)
    if native and _key(host.driver) >= _key(native):
        return Check(name, "pass", f"{runs} runs the image's CUDA {cuda} (needs >= {native})")
    if compat and _key(host.driver) >= _key(compat):
        return Check(
            name,
            "warn",
            f"{runs} runs the image's CUDA {cuda} only through minor-version compatibility (>= {compat})",
            upgrade,
        )
    if native is None and compat is None:
        return Check(
            name, "warn", f"CUDA {cuda}: not in airlock's driver table; cannot judge {runs}", upgrade
        )
    return Check(name, "fail", f"{runs} cannot run the image's CUDA {cuda}", upgrade)


def check_images(db: StoreDb | None, info: GpuInfo) -> list[Check]:
    cuda_images = [i for i in (db.images if db else []) if i.nvidia_require_cuda or i.cuda_version]
    if not cuda_images:
        return [Check("driver vs images", "skip", "the store holds no CUDA image")]
    if info.driver is None:
        why = info.problem or "no NVIDIA driver"
        return [
            Check(
                "driver vs images",
                "fail",
                f"{why}; the store holds {len(cuda_images)} CUDA image(s): "
                + ", ".join(i.reference for i in cuda_images),
                "install the NVIDIA driver that their CUDA needs (docs/doctor.md)",
            )
        ]
    first = info.gpus[0] if info.gpus else None
    host = HostCuda(
        driver=info.driver,
        cuda=info.cuda or cuda_of_driver(info.driver),
        brand=brand_name(first.brand if first else None),
        arch=first.cc_text if first and first.compute_capability else None,
    )
    return [check_image(image, host) for image in cuda_images]
