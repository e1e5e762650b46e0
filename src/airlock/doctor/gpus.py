"""The host's NVIDIA GPUs from ``nvidia-smi``: the CSV query (count, memory, compute capability, driver,
MIG mode) and the XML report (the driver's CUDA version, the brand, MIG devices); checked against the
spec's ``hardware:`` and its engines' parallelism.

nvidia-smi rather than NVML bindings: it is on every host with the driver, and its output can be
recorded for tests; NVML would add a dependency for the same numbers.
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from airlock.doctor.host import Host
from airlock.doctor.model import Check
from airlock.plan.hardware import capability_text
from airlock.spec import Spec, VllmEngineSpec

CSV_FIELDS = "index,name,uuid,memory.total,compute_cap,driver_version,mig.mode.current"
CSV_QUERY = ("nvidia-smi", f"--query-gpu={CSV_FIELDS}", "--format=csv,noheader,nounits")
XML_QUERY = ("nvidia-smi", "-q", "-x")
DRIVER_FIX = "install the NVIDIA driver (nvidia-smi comes with it), then run doctor again"


@dataclass(frozen=True)
class MigDevice:
    index: int
    gpu_instance_id: int | None
    compute_instance_id: int | None
    memory_mib: int | None
    multiprocessors: int | None


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str
    memory_mib: int | None
    compute_capability: tuple[int, int] | None
    mig_mode: str | None  # Enabled | Disabled | None (not MIG-capable)
    mig_pending: str | None = None
    brand: str | None = None  # product_brand: NVIDIA, GeForce, Tesla, NVIDIA RTX ...
    mig_devices: tuple[MigDevice, ...] = ()

    @property
    def cc_text(self) -> str:
        return capability_text(self.compute_capability)


@dataclass(frozen=True)
class GpuInfo:
    gpus: tuple[Gpu, ...]
    driver: str | None
    cuda: str | None  # the newest CUDA the driver runs, as nvidia-smi reports it
    problem: str | None = None  # why no GPU could be read (None: nvidia-smi answered)
    installed: bool = True  # is nvidia-smi there at all


def _na(value: str) -> str | None:
    value = value.strip()
    return None if value.strip("[]") in ("N/A", "Not Supported", "Unknown Error", "") else value


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    match = re.match(r"\s*(\d+)", value)
    return int(match.group(1)) if match else None


def parse_csv(text: str) -> list[Gpu]:
    """``nvidia-smi --query-gpu=<CSV_FIELDS> --format=csv,noheader,nounits``, one GPU a line."""
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if len(row) < 7:
            continue
        index, name, uuid, memory, cc, _driver, mig = (c.strip() for c in row[:7])
        cc_value = _na(cc)
        cap = None
        if cc_value and re.fullmatch(r"\d+\.\d+", cc_value):
            major, minor = cc_value.split(".")
            cap = (int(major), int(minor))
        gpus.append(Gpu(int(index), name, uuid, _int(_na(memory)), cap, _na(mig)))
    return gpus


def _text(node: ET.Element | None, path: str) -> str | None:
    if node is None:
        return None
    found = node.find(path)
    return _na(found.text or "") if found is not None and found.text is not None else None


def parse_xml(text: str) -> tuple[str | None, str | None, list[Gpu]]:
    """``nvidia-smi -q -x``: (driver version, CUDA version, GPUs with brand and MIG devices)."""
    # nvidia-smi's own output on this host; ElementTree resolves no external entities (the DTD line is inert)
    root = ET.fromstring(text)  # noqa: S314
    gpus = []
    for i, node in enumerate(root.findall("gpu")):
        migs = tuple(
            MigDevice(
                index=_int(_text(m, "index")) or 0,
                gpu_instance_id=_int(_text(m, "gpu_instance_id")),
                compute_instance_id=_int(_text(m, "compute_instance_id")),
                memory_mib=_int(_text(m, "fb_memory_usage/total")),
                multiprocessors=_int(_text(m, "device_attributes/shared/multiprocessor_count")),
            )
            for m in node.findall("mig_devices/mig_device")
        )
        gpus.append(
            Gpu(
                index=i,
                name=_text(node, "product_name") or "unknown GPU",
                uuid=_text(node, "uuid") or "",
                memory_mib=_int(_text(node, "fb_memory_usage/total")),
                compute_capability=None,
                mig_mode=_text(node, "mig_mode/current_mig"),
                mig_pending=_text(node, "mig_mode/pending_mig"),
                brand=_text(node, "product_brand"),
                mig_devices=migs,
            )
        )
    return _text(root, "driver_version"), _text(root, "cuda_version"), gpus


def read_gpus(host: Host) -> GpuInfo:
    """Both queries, merged by UUID (the CSV gives compute capability, the XML brand, CUDA and MIG)."""
    listed = host.run(CSV_QUERY)
    if listed is None:
        return GpuInfo((), None, None, "nvidia-smi is not installed: no NVIDIA driver on this host", False)
    if listed.returncode != 0:
        why = (listed.stdout.strip() or listed.stderr.strip() or f"exit {listed.returncode}").splitlines()[0]
        return GpuInfo((), None, None, f"nvidia-smi failed: {why}")
    gpus = parse_csv(listed.stdout)
    driver = next(
        (
            _na(row[5])
            for row in csv.reader(io.StringIO(listed.stdout), skipinitialspace=True)
            if len(row) >= 7
        ),
        None,
    )
    cuda = None
    report = host.run(XML_QUERY)
    if report is not None and report.returncode == 0:
        try:
            xml_driver, cuda, detailed = parse_xml(report.stdout)
        except ET.ParseError:
            detailed, xml_driver = [], None
        by_uuid = {g.uuid: g for g in detailed}
        merged = []
        for gpu in gpus:
            extra = by_uuid.get(gpu.uuid)
            if extra is not None:
                gpu = Gpu(
                    gpu.index,
                    gpu.name,
                    gpu.uuid,
                    gpu.memory_mib,
                    gpu.compute_capability,
                    gpu.mig_mode or extra.mig_mode,
                    extra.mig_pending,
                    extra.brand,
                    extra.mig_devices,
                )
            merged.append(gpu)
        gpus = merged
        driver = driver or xml_driver
    return GpuInfo(tuple(gpus), driver, cuda)


def needs_gpu(spec: Spec | None) -> bool:
    """Does the spec need an NVIDIA GPU here (a ``hardware:`` section, or a vLLM engine in a container)?"""
    if spec is None:
        return False
    if spec.hardware is not None:
        return True
    return any(isinstance(m.engine, VllmEngineSpec) and m.engine.image for m in spec.models)


def check_gpus(info: GpuInfo, spec: Spec | None) -> list[Check]:
    if not info.gpus:
        why = info.problem or "nvidia-smi lists no GPU"
        if needs_gpu(spec):
            return [Check("gpus", "fail", f"{why}; the spec needs NVIDIA GPUs", DRIVER_FIX)]
        return [Check("gpus", "skip", f"{why} (the spec needs none: llama.cpp and vLLM's CPU build run)")]
    names: dict[str, int] = {}
    for gpu in info.gpus:
        key = f"{gpu.name} ({gpu.memory_mib:,} MiB, compute capability {gpu.cc_text})"
        names[key] = names.get(key, 0) + 1
    listed = ", ".join(f"{n} x {key}" for key, n in names.items())
    cuda = f", CUDA {info.cuda}" if info.cuda else ""
    checks = [Check("gpus", "pass", f"{listed}; driver {info.driver or '?'}{cuda}")]
    checks += _check_mig(info)
    if spec is not None:
        checks += _check_against_spec(info, spec)
    return checks


def _check_mig(info: GpuInfo) -> list[Check]:
    checks = []
    for gpu in info.gpus:
        if gpu.mig_pending and gpu.mig_mode and gpu.mig_pending != gpu.mig_mode:
            checks.append(
                Check(
                    f"mig gpu {gpu.index}",
                    "warn",
                    f"MIG mode is {gpu.mig_mode}, {gpu.mig_pending} after the GPU's next reset",
                    f"reset the GPU (nvidia-smi -i {gpu.index} -r, with nothing running on it) or set the mode back",
                )
            )
        if gpu.mig_mode != "Enabled":
            continue
        if not gpu.mig_devices:
            checks.append(
                Check(
                    f"mig gpu {gpu.index}",
                    "fail",
                    f"MIG is enabled on GPU {gpu.index} ({gpu.name}) but it has no MIG devices: no CUDA device to run on",
                    f"create instances (nvidia-smi mig -i {gpu.index} -cgi <profiles> -C) or turn MIG off "
                    f"(nvidia-smi -i {gpu.index} -mig 0)",
                )
            )
            continue
        devices = ", ".join(
            f"{d.index}: {d.memory_mib or '?'} MiB, {d.multiprocessors or '?'} SMs (GI {d.gpu_instance_id}, "
            f"CI {d.compute_instance_id})"
            for d in gpu.mig_devices
        )
        checks.append(
            Check(
                f"mig gpu {gpu.index}",
                "warn",
                f"MIG is enabled on GPU {gpu.index} ({gpu.name}): {len(gpu.mig_devices)} MIG devices [{devices}]; "
                "an engine sees one MIG device, with that device's memory, and tensor parallelism cannot span MIG devices",
                "give each engine one MIG device (its UUID from nvidia-smi -L) sized for its model, "
                f"or turn MIG off (nvidia-smi -i {gpu.index} -mig 0) for a model that needs the whole GPU",
            )
        )
    return checks


def _driver_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def _check_against_spec(info: GpuInfo, spec: Spec) -> list[Check]:
    from airlock.plan.hardware import resolve_hardware

    checks = []
    count = len(info.gpus)
    hw = spec.hardware
    if hw is not None:
        wanted = resolve_hardware(gpu=hw.gpu, gpus=hw.count, gpu_memory=hw.gpu_memory)
        problems = []
        if count < hw.count:
            problems.append(f"the spec plans for {hw.count} GPUs; this host has {count}")
        small = [
            g for g in info.gpus if g.memory_mib is not None and (g.memory_mib << 20) < wanted.memory_bytes
        ]
        if small:
            problems.append(
                f"the spec plans for {wanted.name} ({wanted.memory_bytes / 2**30:.1f} GiB usable); "
                f"GPU {small[0].index} has {small[0].memory_mib:,} MiB"
            )
        if problems:
            checks.append(
                Check(
                    "gpus vs spec",
                    "fail",
                    "; ".join(problems),
                    "run on a host with those GPUs, or change hardware: in the spec and run `airlock plan` again",
                )
            )
        else:
            checks.append(
                Check("gpus vs spec", "pass", f"{count} GPUs for the spec's {hw.count} x {wanted.name}")
            )
        if hw.driver and info.driver and _driver_key(info.driver) < _driver_key(hw.driver):
            checks.append(
                Check(
                    "driver vs spec",
                    "warn",
                    f"the spec was planned for driver {hw.driver}; this host runs {info.driver}",
                    f"upgrade the driver to {hw.driver} or newer, or set hardware.driver: {info.driver} and plan again",
                )
            )
    for model in spec.models:
        engine = model.engine
        if not isinstance(engine, VllmEngineSpec):
            continue
        needed = (engine.tensor_parallel_size or 1) * (engine.pipeline_parallel_size or 1)
        if needed > count:
            checks.append(
                Check(
                    f"parallelism {model.name}",
                    "fail",
                    f"{model.name} asks for {needed} GPUs (tensor x pipeline parallel); this host has {count}",
                    "lower tensor_parallel_size/pipeline_parallel_size, or run it across hosts (airlock deploy)",
                )
            )
    return checks
