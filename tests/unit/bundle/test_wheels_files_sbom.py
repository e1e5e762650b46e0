"""Wheels (pip download for a target platform) and plain files: packed, listed in the SBOM, installed."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from airlock.bundle.airgap.install import InstallOptions, install
from airlock.bundle.format import layout
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair
from airlock.bundle.staging.sources.wheels import pip_command
from airlock.errors import SourceError
from airlock.spec import WheelsSpec
from bundle_helpers import do_pack, write_spec


def make_wheel(folder: Path, name: str = "demo_pkg", version: str = "1.0", license_expr: str = "MIT") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\nLicense-Expression: {license_expr}\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "VALUE = 1\n")
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    links = tmp_path / "links"
    make_wheel(links)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "gateway.toml").write_text("port = 8000\n")
    (tmp_path / "conf" / "sub").mkdir()
    (tmp_path / "conf" / "sub" / "x.txt").write_text("x")
    (tmp_path / "LICENSE").write_text("Apache-2.0\n")
    return write_spec(
        tmp_path / "airlock.yaml",
        {
            "wheels": {
                "requirements": ["demo_pkg==1.0"],
                "find_links": [str(links)],
                "no_index": True,
                "platforms": ["manylinux2014_x86_64"],
                "python_version": "3.11",
                "implementation": "cp",
                "abis": ["cp311", "none"],
            },
            "files": [{"path": "conf", "dest": "etc/airlock"}, {"path": "LICENSE"}],
        },
    )


def test_pip_is_asked_for_the_target_platform() -> None:
    cmd = pip_command(
        WheelsSpec(
            requirements=["vllm==0.6.3"],
            platforms=["manylinux2014_x86_64"],
            python_version="3.11",
            abis=["cp311"],
        ),
        Path("/d"),
        Path("/py"),
    )
    assert cmd[:4] == ["/py", "-m", "pip", "download"]
    for flag in (
        "--only-binary=:all:",
        "--platform=manylinux2014_x86_64",
        "--python-version=3.11",
        "--abi=cp311",
    ):
        assert flag in cmd
    assert cmd[-1] == "vllm==0.6.3"


def test_wheels_and_files_travel_and_land_in_the_store(tmp_path: Path, spec: Path, keys: KeyPair) -> None:
    result = do_pack(spec, tmp_path / "b", keys)
    kinds = {a.kind: a for a in result.manifest.artifacts}
    assert [f.path for f in kinds["wheels"].files] == ["demo_pkg-1.0-py3-none-any.whl"]
    assert "platform=manylinux2014_x86_64" in (kinds["wheels"].source.detail or "")
    assert [f.path for f in kinds["files"].files] == [
        "LICENSE",
        "etc/airlock/gateway.toml",
        "etc/airlock/sub/x.txt",
    ]
    store = tmp_path / "store"
    installed = install(InstallOptions(VolumeSet([result.out], trust=[keys.public]), store=store))
    assert installed.complete and installed.spec_path is None  # nothing to serve
    whl = store / "wheels" / "demo_pkg-1.0-py3-none-any.whl"
    assert zipfile.ZipFile(whl).read("demo_pkg/__init__.py") == b"VALUE = 1\n"
    assert (store / "files" / "etc" / "airlock" / "gateway.toml").read_text() == "port = 8000\n"


def test_pip_failures_are_one_line_errors(tmp_path: Path, spec: Path, keys: KeyPair) -> None:
    spec.write_text(spec.read_text().replace("demo_pkg==1.0", "demo_pkg==9.9"))
    with pytest.raises(SourceError, match=r"pip download. failed"):
        do_pack(spec, tmp_path / "b", keys)


def test_sbom_lists_wheels_files_and_models_with_hashes_and_licences(
    tmp_path: Path, spec: Path, keys: KeyPair
) -> None:
    from bundle_helpers import make_staging

    staging = make_staging(tmp_path / "staging")
    combined = spec.read_text() + staging.spec.read_text().replace(
        "tiny-model", str(staging.model_dir)
    ).replace("tiny.gguf", str(staging.gguf))
    spec.write_text(combined)
    result = do_pack(spec, tmp_path / "b", keys)
    sbom_bytes = (result.volumes[0].path / layout.SBOM).read_bytes()
    assert result.manifest.sbom is not None and result.manifest.sbom.size == len(sbom_bytes)
    sbom = json.loads(sbom_bytes)
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    by_type: dict[str, list[dict[str, Any]]] = {}  # parsed JSON
    for comp in sbom["components"]:
        by_type.setdefault(comp["type"], []).append(comp)
    (wheel,) = by_type["library"]
    assert wheel["purl"] == "pkg:pypi/demo-pkg@1.0" and wheel["licenses"] == [{"expression": "MIT"}]
    models = {m["name"]: m for m in by_type["machine-learning-model"]}
    assert models["local/tiny"]["licenses"] == [{"license": {"name": "apache-2.0"}}]
    files = {c["name"] for c in models["local/tiny"]["components"]}
    assert "model.safetensors" in files
    assert all(h["alg"] == "SHA-256" for c in by_type["file"] for h in c["hashes"])
    _validate_cyclonedx(sbom_bytes)


def _validate_cyclonedx(data: bytes) -> None:
    """Against the CycloneDX 1.6 JSON schema, when cyclonedx-python-lib (a dev dependency) is installed."""
    try:
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    except ImportError:
        pytest.fail("cyclonedx-python-lib[json-validation] is a dev dependency: pip install -e '.[dev]'")
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode())
    assert errors is None, errors
