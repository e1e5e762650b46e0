"""airlock.common.wheels: what airlock's wheel is built from, and requirements pinned by hash."""

from __future__ import annotations

from pathlib import Path

from airlock.common.wheels import airlock_checkout, pinned_requirements, source_digest, source_files


def test_requirements_pin_name_version_and_hash_sorted_by_file_name() -> None:
    text = pinned_requirements([("zstandard-0.23.0-cp311-cp311-manylinux_2_17_x86_64.whl", "b" * 64),
                                ("Airlock-0.1.0-py3-none-any.whl", "a" * 64)])  # fmt: skip
    assert text == f"airlock==0.1.0 --hash=sha256:{'a' * 64}\nzstandard==0.23.0 --hash=sha256:{'b' * 64}\n"


def test_the_source_is_the_project_files_and_src_without_caches(tmp_path: Path) -> None:
    for rel in ("pyproject.toml", "README.md", "LICENSE", "Makefile", "src/pkg/a.py",
                "src/pkg/__pycache__/a.cpython-311.pyc", "src/pkg.egg-info/PKG-INFO", "tests/t.py"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    files = source_files(tmp_path)
    assert files == ["LICENSE", "README.md", "pyproject.toml", "src/pkg/a.py"]
    before = source_digest(tmp_path, files)
    (tmp_path / "src/pkg/a.py").write_text("changed")
    assert source_digest(tmp_path, files) != before


def test_this_airlock_runs_from_its_checkout() -> None:
    root = airlock_checkout()
    assert root is not None and (root / "src" / "airlock" / "common" / "wheels.py").is_file()
