"""Placing blobs on volumes: whole where they fit (first fit), split only when larger than a volume."""

from __future__ import annotations

import pytest

from airlock.bundle.format.compress import Frame
from airlock.bundle.staging.volumes import Item, plan_volumes
from airlock.errors import BundleError


def _shape(plan: list[list]) -> list[list[tuple[str, int | None, int, int]]]:  # type: ignore[type-arg]
    return [[(p.blob, p.part, p.offset, p.length) for p in v] for v in plan]


def test_whole_files_fill_gaps_first_fit() -> None:
    plan = plan_volumes([Item("a", 600), Item("b", 600), Item("c", 300)], capacity=1000)
    assert _shape(plan) == [[("a", None, 0, 600), ("c", None, 0, 300)], [("b", None, 0, 600)]]


def test_a_blob_larger_than_a_volume_is_split_into_parts() -> None:
    plan = plan_volumes([Item("a", 100), Item("big", 2500)], capacity=1000)
    assert _shape(plan) == [
        [("a", None, 0, 100), ("big", 1, 0, 900)],
        [("big", 2, 900, 1000)],
        [("big", 3, 1900, 600)],
    ]
    assert all(sum(p.stored_size for p in v) <= 1000 for v in plan)


def test_a_tiny_free_space_is_not_worth_starting_a_part_in() -> None:
    plan = plan_volumes([Item("a", 63_995), Item("big", 100_000)], capacity=64_000)
    assert _shape(plan)[0] == [("a", None, 0, 63_995)]
    assert _shape(plan)[1][0] == ("big", 1, 0, 64_000)


def test_compressed_blobs_are_cut_between_frames() -> None:
    frames = tuple(Frame(raw=100, stored=40) for _ in range(5))  # 200 stored bytes
    plan = plan_volumes([Item("z", 200, raw_size=500, frames=frames)], capacity=90)
    assert _shape(plan) == [[("z", 1, 0, 200)], [("z", 2, 200, 200)], [("z", 3, 400, 100)]]
    assert [p.stored_size for v in plan for p in v] == [80, 80, 40]


def test_a_frame_larger_than_a_volume_is_an_error() -> None:
    with pytest.raises(BundleError, match="larger --volume-size"):
        plan_volumes([Item("z", 200, raw_size=100, frames=(Frame(raw=100, stored=200),))], capacity=90)


def test_empty_blobs_and_empty_plans() -> None:
    assert _shape(plan_volumes([Item("e", 0)], capacity=10)) == [[("e", None, 0, 0)]]
    assert plan_volumes([], capacity=10) == [[]]
