"""The crossing's arithmetic: volumes as pack cuts them, parity volumes, the copy time, a base's holdings."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.plan.crossing import (
    Base,
    CarriedFile,
    CarriedItem,
    CrossingOptions,
    crossing,
    folder_files,
    measure_write_speed,
)

GB = 10**9
MODEL = CarriedItem("model", "m", (CarriedFile("a.safetensors", 30 * GB, "aa"), CarriedFile("b.safetensors", 20 * GB, "bb"),
                                   CarriedFile("config.json", 1000)), repo="org/m", commit="c" * 40)  # fmt: skip


@pytest.mark.parametrize(
    ("volume", "parity", "data", "parities", "written"),
    [(None, 0, 1, 0, 50 * GB + 1000), (None, 5, 1, 1, 2 * (50 * GB + 1000)),  # one volume: a full copy
     (25 * GB, 0, 3, 0, 50 * GB + 1000), (25 * GB, 10, 3, 1, 75 * GB + 1000), (4 * GB, 25, 13, 4, 66 * GB + 1000)],
)  # fmt: skip
def test_volumes_and_parity(
    volume: int | None, parity: float, data: int, parities: int, written: int
) -> None:
    c = crossing([MODEL], CrossingOptions(volume_size=volume, parity_percent=parity, media_bytes_per_s=100e6))
    assert (c.data_volumes, c.parity_volumes, c.written_bytes) == (data, parities, written)
    assert c.copy_seconds == pytest.approx(written / 100e6)


def test_a_base_holds_blobs_or_whole_models() -> None:
    unknown = CarriedItem("image", "vllm/vllm-openai:v1", known=False)
    by_blob = crossing([MODEL, unknown], CrossingOptions(base=Base(blobs=frozenset({"aa"}))))
    assert (by_blob.carried_bytes, by_blob.held_bytes, by_blob.unknown) == (
        20 * GB + 1000,
        30 * GB,
        ("vllm/vllm-openai:v1",),
    )
    assert by_blob.copy_seconds is None
    by_commit = crossing([MODEL], CrossingOptions(base=Base(models=frozenset({("org/m", "c" * 40)}))))
    assert (by_commit.carried_bytes, by_commit.data_volumes) == (0, 1)


def test_folder_files_and_a_measured_speed(tmp_path: Path) -> None:
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "config.json").write_bytes(b"{}")
    (tmp_path / "m" / "sub" / "w.bin").write_bytes(b"x" * 100)
    assert folder_files(tmp_path / "m") == (CarriedFile("config.json", 2), CarriedFile("sub/w.bin", 100))
    assert folder_files(tmp_path / "m" / "config.json") == (CarriedFile("config.json", 2),)
    assert measure_write_speed(tmp_path / "media", 1024 * 1024) > 0
    assert list((tmp_path / "media").iterdir()) == []  # its probe file is gone
