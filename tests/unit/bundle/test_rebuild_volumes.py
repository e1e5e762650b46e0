"""rebuild --volume A --volume B: every volume given is rebuilt (up to the parity volumes), or a clear no."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from airlock.bundle.airgap.rebuild import RebuildOptions, rebuild
from airlock.bundle.airgap.verify import VerifyOptions, verify
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair
from airlock.bundle.staging.pack import PackResult
from airlock.cli.main import run
from airlock.errors import BundleError
from bundle_helpers import Staging, do_pack


def _airlock(*args: str) -> int:
    """The CLI in this process, as ``airlock`` runs it: its exit code."""
    with pytest.raises(SystemExit) as done:
        run(list(args))
    return int(done.value.code or 0)


@pytest.fixture
def two_parity(tmp_path: Path, staging: Staging, keys: KeyPair) -> PackResult:
    packed = do_pack(staging.spec, tmp_path / "bundle", keys, volume_size=100_000, parity_percent=60)
    assert packed.manifest.parity is not None and packed.manifest.parity.parity_volumes == 2
    return packed


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _lose(packed: PackResult, numbers: list[int], away: Path) -> dict[int, dict[str, bytes]]:
    lost = {}
    for n in numbers:
        path = packed.volumes[n - 1].path
        lost[n] = _snapshot(path)
        shutil.move(path, away / path.name)
    return lost


@pytest.mark.parametrize("which", [(1, 2), (2, "parity"), ("parity", "parity2")])
def test_two_lost_volumes_are_both_rebuilt(
    two_parity: PackResult, keys: KeyPair, tmp_path: Path, which: tuple[object, object]
) -> None:
    count = len(two_parity.volumes)
    names = {"parity": count - 1, "parity2": count}
    numbers = sorted(n if isinstance(n, int) else names[str(n)] for n in which)
    lost = _lose(two_parity, numbers, tmp_path)
    result = rebuild(
        RebuildOptions(
            VolumeSet([two_parity.out], trust=[keys.public]), volume=tuple(numbers), out=tmp_path / "new"
        )
    )
    assert [v.number for v in result.rebuilt] == numbers
    for v in result.rebuilt:
        assert _snapshot(v.path) == lost[v.number], f"volume {v.number} byte for byte"
    assert not set(numbers) & set(result.used)
    everything = [two_parity.out, *(v.path for v in result.rebuilt)]
    assert verify(VerifyOptions(VolumeSet(everything, trust=[keys.public]))).ok


def test_more_volumes_than_parity_volumes_is_refused_naming_how_many(
    two_parity: PackResult, keys: KeyPair, tmp_path: Path
) -> None:
    _lose(two_parity, [1, 2, 3], tmp_path)
    with pytest.raises(BundleError, match="the bundle has 2 parity volumes") as info:
        rebuild(
            RebuildOptions(
                VolumeSet([two_parity.out], trust=[keys.public]), volume=(1, 2, 3), out=tmp_path / "n"
            )
        )
    assert "cannot rebuild volumes 1, 2 and 3" in info.value.message
    assert not (tmp_path / "n").exists(), "nothing written"


def test_the_cli_rebuilds_every_volume_given(
    two_parity: PackResult,
    keys: KeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRLOCK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    _lose(two_parity, [2, 3], tmp_path)
    trust = ["--trust", str(keys.public)]
    assert _airlock("verify", str(two_parity.out), *trust) == 16
    err = capsys.readouterr().err
    assert "--volume 2 --volume 3 --out NEW_FOLDER" in err
    new = str(tmp_path / "new")
    assert (
        _airlock("rebuild", str(two_parity.out), "--volume", "2", "--volume", "3", "--out", new, *trust) == 0
    )
    out = capsys.readouterr().out
    assert "rebuilt volumes 2 and 3 from volumes 1, " in out
    assert f"volume 2 at {tmp_path / 'new' / 'vol-0002'}" in out
    assert f"volume 3 at {tmp_path / 'new' / 'vol-0003'}" in out
    assert _airlock("verify", str(two_parity.out), str(tmp_path / "new"), *trust) == 0
    assert "bundle verified" in capsys.readouterr().out
