"""GPUs from recorded nvidia-smi output (CSV query and XML report) of real models, with and without MIG."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.doctor.gpus import CSV_QUERY, check_gpus, parse_csv, parse_xml, read_gpus
from airlock.doctor.host import Output
from airlock.spec import Spec
from unit.doctor.recorded_host import RecordedHost, fixture


def spec(data: dict[str, object]) -> Spec:
    return Spec.model_validate(data)


@pytest.mark.parametrize(
    ("model", "count", "name", "memory", "cc", "driver", "cuda", "brand", "mig"),
    [
        ("h100x2", 2, "NVIDIA H100 80GB HBM3", 81559, (9, 0), "550.54.15", "12.4", "NVIDIA", "Disabled"),
        ("a100-mig", 1, "NVIDIA A100-SXM4-40GB", 40960, (8, 0), "535.129.03", "12.2", "NVIDIA", "Enabled"),
        ("rtx3090", 1, "NVIDIA GeForce RTX 3090", 24576, (8, 6), "535.183.01", "12.2", "GeForce", None),
        ("l4", 1, "NVIDIA L4", 23034, (8, 9), "570.124.06", "12.8", "NVIDIA", None),
    ],
)
def test_read_gpus(
    model: str, count: int, name: str, memory: int, cc: tuple[int, int], driver: str, cuda: str, brand: str,
    mig: str | None,
) -> None:  # fmt: skip
    info = read_gpus(RecordedHost().with_gpus(model))
    assert len(info.gpus) == count
    gpu = info.gpus[0]
    assert (gpu.name, gpu.memory_mib, gpu.compute_capability, gpu.brand, gpu.mig_mode) == (
        name, memory, cc, brand, mig,
    )  # fmt: skip
    assert (info.driver, info.cuda) == (driver, cuda)
    check = check_gpus(info, None)[0]
    assert check.status == "pass"
    assert f"{count} x {name} ({memory:,} MiB, compute capability {cc[0]}.{cc[1]})" in check.detail


def test_mig_devices_are_listed_and_warned() -> None:
    info = read_gpus(RecordedHost().with_gpus("a100-mig"))
    migs = info.gpus[0].mig_devices
    assert [(d.gpu_instance_id, d.memory_mib, d.multiprocessors) for d in migs] == [
        (2, 19968, 42), (3, 9856, 28), (9, 4864, 14),
    ]  # fmt: skip
    mig = [c for c in check_gpus(info, None) if c.name == "mig gpu 0"]
    assert [c.status for c in mig] == ["warn"]
    assert "3 MIG devices" in mig[0].detail
    assert "-mig 0" in mig[0].fix


def test_mig_enabled_without_devices_fails() -> None:
    xml = fixture("nvidia-smi-a100-mig.xml")
    start, end = xml.index("<mig_devices>"), xml.index("</mig_devices>")
    host = RecordedHost().with_gpus("a100-mig")
    host.commands[("nvidia-smi", "-q", "-x")] = Output(
        0, xml[:start] + "<mig_devices>\n\t\t\tNone\n\t\t" + xml[end:]
    )
    checks = check_gpus(read_gpus(host), None)
    mig = next(c for c in checks if c.name == "mig gpu 0")
    assert mig.status == "fail"
    assert "no MIG devices" in mig.detail


def test_no_nvidia_smi_skips_unless_the_spec_needs_gpus(tmp_path: Path) -> None:
    info = read_gpus(RecordedHost())
    assert not info.installed
    assert check_gpus(info, None)[0].status == "skip"
    needs = spec({"hardware": {"gpu": "h100-80gb", "count": 2}, "models": []})
    failed = check_gpus(info, needs)[0]
    assert (failed.status, "install the NVIDIA driver" in failed.fix) == ("fail", True)


def test_driver_not_loaded_is_reported() -> None:
    host = RecordedHost()
    host.commands[CSV_QUERY] = Output(
        9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
        "Make sure that the latest NVIDIA driver is installed and running.\n\n",
    )  # fmt: skip
    info = read_gpus(host)
    assert info.installed
    assert info.problem is not None and "couldn't communicate with the NVIDIA driver" in info.problem


def test_gpus_against_the_spec() -> None:
    info = read_gpus(RecordedHost().with_gpus("h100x2"))
    four = spec({"hardware": {"gpu": "h100-80gb", "count": 4, "driver": "570.86.15"}, "models": []})
    by_name = {c.name: c for c in check_gpus(info, four)}
    assert by_name["gpus vs spec"].status == "fail"
    assert "plans for 4 GPUs; this host has 2" in by_name["gpus vs spec"].detail
    assert by_name["driver vs spec"].status == "warn"
    two = spec({"hardware": {"gpu": "h100-80gb", "count": 2}, "models": []})
    assert {c.name: c.status for c in check_gpus(info, two)}["gpus vs spec"] == "pass"
    bigger = spec({"hardware": {"gpu": "h200-141gb", "count": 1}, "models": []})
    small = {c.name: c for c in check_gpus(info, bigger)}["gpus vs spec"]
    assert small.status == "fail" and "81,559 MiB" in small.detail
    tp4 = spec(
        {
            "models": [
                {"name": "m", "hf": {"repo": "org/m"}, "engine": {"kind": "vllm", "tensor_parallel_size": 4}}
            ]
        }
    )
    assert {c.name: c.status for c in check_gpus(info, tp4)}["parallelism m"] == "fail"


def test_csv_not_available_values() -> None:
    gpus = parse_csv("0, NVIDIA GeForce RTX 3090, GPU-x, 24576, 8.6, 535.183.01, [N/A]\n")
    assert gpus[0].mig_mode is None
    driver, cuda, detailed = parse_xml(fixture("nvidia-smi-l4.xml"))
    assert (driver, cuda, detailed[0].mig_mode, detailed[0].mig_devices) == ("570.124.06", "12.8", None, ())
