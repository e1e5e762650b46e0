"""pack --with-airlock: the first volume's bootstrap folder, its SHA256SUMS, and verify checking it.

These use a stand-in airlock wheel without dependencies (pip gathers it offline); the real wheel,
its dependencies and the bootstrap run in a fresh venv are tests/integration/test_bootstrap_airlock.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from airlock.bundle.airgap.verify import VerifyOptions, VerifyReport, verify
from airlock.bundle.format import layout
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair, generate_keypair
from airlock.bundle.staging.bootstrap import wheel_name_version
from airlock.bundle.staging.pack import PackOptions, PackResult, carries_airlock
from airlock.cli.main import run
from airlock.errors import SourceError
from airlock.spec import load_spec
from bundle_helpers import Staging, do_pack, make_staging, write_spec


def stand_in_wheel(folder: Path, version: str = "0.1.0") -> Path:
    """A minimal, valid ``airlock`` wheel with no dependencies (pip installs and downloads it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"airlock-{version}-py3-none-any.whl"
    info = f"airlock-{version}.dist-info"
    files = {
        "airlock_stand_in.py": b"VERSION = 'stand-in'\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: airlock\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
        record = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
        zf.writestr(zipfile.ZipInfo(f"{info}/RECORD", (1980, 1, 1, 0, 0, 0)), record)
    return path


@dataclass(frozen=True)
class Packed:
    result: PackResult
    keys: KeyPair


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Packed:
    """Packed once for the module (pip takes seconds); each test works on its own copy."""
    root = tmp_path_factory.mktemp("with-airlock")
    keys = generate_keypair(root / "keys" / "staging.key")
    result = do_pack(
        make_staging(root / "staging").spec, root / "bundle", keys, volume_size=100_000, with_airlock=True,
        airlock_wheel=stand_in_wheel(root / "wheel"), bootstrap_cache=root / "cache",
    )  # fmt: skip
    return Packed(result, keys)


@pytest.fixture
def with_airlock(packed: Packed, tmp_path: Path) -> PackResult:
    out = tmp_path / "bundle"
    shutil.copytree(packed.result.out, out)
    volumes = [replace(v, path=out / v.path.name) for v in packed.result.volumes]
    return replace(packed.result, out=out, volumes=volumes)


@pytest.fixture
def keys(packed: Packed) -> KeyPair:
    return packed.keys


def _verify(out: Path, keys: KeyPair) -> VerifyReport:
    return verify(VerifyOptions(VolumeSet([out], trust=[keys.public])))


def test_the_first_volume_carries_a_bootstrap_folder_the_manifest_lists(
    with_airlock: PackResult, keys: KeyPair
) -> None:
    folder = with_airlock.volumes[0].path / layout.BOOTSTRAP_DIR
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        ["airlock-0.1.0-py3-none-any.whl", "SHA256SUMS", "bootstrap.sh", "requirements.txt"]
    )
    assert not any((v.path / layout.BOOTSTRAP_DIR).exists() for v in with_airlock.volumes[1:])
    boot = with_airlock.manifest.bootstrap
    assert boot is not None and boot == with_airlock.bootstrap
    assert boot.sums_sha256 == hashlib.sha256((folder / "SHA256SUMS").read_bytes()).hexdigest()
    assert {f.path: f.sha256 for f in boot.files} == {
        n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names
    }
    wheel_sha = hashlib.sha256((folder / "airlock-0.1.0-py3-none-any.whl").read_bytes()).hexdigest()
    assert f"airlock==0.1.0 --hash=sha256:{wheel_sha}\n" in (folder / "requirements.txt").read_text()
    assert (folder / "bootstrap.sh").stat().st_mode & 0o111, "the script is executable"
    assert all(v.bytes <= 100_000 for v in with_airlock.volumes), "room was left for it"
    report = _verify(with_airlock.out, keys)
    assert report.ok, report.problems


def test_the_sbom_lists_airlocks_own_wheels(with_airlock: PackResult) -> None:
    sbom = json.loads((with_airlock.volumes[0].path / layout.SBOM).read_bytes())
    (own,) = [c for c in sbom["components"] if c["bom-ref"].startswith("bootstrap:")]
    assert (own["name"], own["version"], own["purl"]) == ("airlock", "0.1.0", "pkg:pypi/airlock@0.1.0")
    boot = with_airlock.manifest.bootstrap
    assert boot is not None
    wheel = next(f for f in boot.files if f.path.endswith(".whl"))
    assert own["hashes"] == [{"alg": "SHA-256", "content": wheel.sha256}]


def test_plain_sha256sum_checks_every_other_file(with_airlock: PackResult) -> None:
    folder = with_airlock.volumes[0].path / layout.BOOTSTRAP_DIR
    listed = {line.split("  ", 1)[1] for line in (folder / "SHA256SUMS").read_text().splitlines()}
    assert listed == {"airlock-0.1.0-py3-none-any.whl", "bootstrap.sh", "requirements.txt"}
    ok = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=folder, capture_output=True)
    assert ok.returncode == 0, ok.stderr
    (folder / "requirements.txt").write_text("evil==1.0\n")
    bad = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=folder, capture_output=True)
    assert bad.returncode != 0


def test_the_bootstrap_script_refuses_a_changed_file_before_installing(
    with_airlock: PackResult, tmp_path: Path
) -> None:
    folder = with_airlock.volumes[0].path / layout.BOOTSTRAP_DIR
    wheel = folder / "airlock-0.1.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"x")
    done = subprocess.run(
        ["sh", str(folder / "bootstrap.sh"), str(tmp_path / "venv")], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "does not match SHA256SUMS: do not install" in done.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize("how", ["flip", "truncate", "delete", "extra"])
def test_verify_reports_every_bootstrap_file_tampered(
    with_airlock: PackResult, keys: KeyPair, tmp_path: Path, how: str
) -> None:
    folder = with_airlock.volumes[0].path / layout.BOOTSTRAP_DIR
    pristine = tmp_path / "pristine"
    shutil.copytree(folder, pristine)
    names = sorted(p.name for p in folder.iterdir())
    for name in names:
        path = folder / name
        if how == "flip":
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 1
            path.write_bytes(bytes(data))
        elif how == "truncate":
            path.write_bytes(path.read_bytes()[:-1])
        elif how == "delete":
            path.unlink()
        else:
            path = folder / f"{name}.extra"
            path.write_text("not listed")
        (problem,) = _verify(with_airlock.out, keys).problems
        rel = path.relative_to(with_airlock.volumes[0].path).as_posix()
        assert (problem.volume, problem.path) == (1, rel), (how, name)
        assert problem.kind == ("unlisted" if how == "extra" else "corrupt")
        if how == "extra":
            path.unlink()
        else:
            shutil.copy2(pristine / name, path)
    assert _verify(with_airlock.out, keys).ok


def test_it_is_on_by_default_when_the_wheels_name_a_platform(tmp_path: Path) -> None:
    plain = load_spec(write_spec(tmp_path / "a.yaml", {"files": [{"path": "a.yaml"}]}))
    targeted = load_spec(
        write_spec(
            tmp_path / "b.yaml",
            {"wheels": {"requirements": ["idna"], "platforms": ["manylinux2014_x86_64"]}},
        )
    )
    options = PackOptions(spec_path=tmp_path / "a.yaml", out=tmp_path / "o")
    assert not carries_airlock(plain, options)
    assert carries_airlock(targeted, options)
    assert not carries_airlock(targeted, PackOptions(spec_path=tmp_path, out=tmp_path, with_airlock=False))
    assert carries_airlock(plain, PackOptions(spec_path=tmp_path, out=tmp_path, with_airlock=True))


def test_pack_prints_the_hash_of_sha256sums(
    tmp_path: Path,
    staging: Staging,
    keys: KeyPair,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRLOCK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRLOCK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    wheel = stand_in_wheel(tmp_path / "wheel")
    out = tmp_path / "b"
    with pytest.raises(SystemExit) as done:
        run(["pack", str(staging.spec), "-o", str(out), "--sign", str(keys.private), "--with-airlock",
             "--airlock-wheel", str(wheel)])  # fmt: skip
    assert done.value.code == 0
    printed = capsys.readouterr().out
    sums = hashlib.sha256((out / "vol-0001" / "bootstrap" / "SHA256SUMS").read_bytes()).hexdigest()
    assert f"SHA-256 of SHA256SUMS: {sums}" in printed
    assert f"sha256sum {out / 'vol-0001' / 'bootstrap' / 'SHA256SUMS'}" in printed


def test_wheel_names() -> None:
    assert wheel_name_version("numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.whl") == ("numpy", "2.1.0")
    assert wheel_name_version("typing_extensions-4.12.2-py3-none-any.whl") == ("typing-extensions", "4.12.2")
    with pytest.raises(SourceError, match="not a wheel file name"):
        wheel_name_version("setup.py")
    assert wheel_name_version("x-1.0-1build-py3-none-any.whl") == ("x", "1.0")
