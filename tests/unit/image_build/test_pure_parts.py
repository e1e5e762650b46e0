"""Reproducible layer tars, dpkg's and Python's lists, manylinux tags, hash-pinned requirements."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from airlock.errors import ImageBuildError
from airlock.image_build.layers import changed_since, snapshot, walk, with_ancestors, write_layer
from airlock.image_build.metadata import dpkg_installed, python_distributions
from airlock.image_build.python_env import platform_tags, requirement_lines

STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u10
Description: GNU C Library
 a continuation line: Version: 9.9

Package: python3
Status: install ok installed
Architecture: amd64
Version: 3.11.2-1+b1

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
"""


def test_dpkg_lists_installed_packages_only() -> None:
    assert dpkg_installed(STATUS) == (("libc6:amd64", "2.36-9+deb12u10"), ("python3", "3.11.2-1+b1"))


def test_python_distributions_from_dist_info(tmp_path: Path) -> None:
    for name, version in (("numpy", "2.4.6"), ("Pygments", "2.21.0")):
        info = tmp_path / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nbody\n")
    (tmp_path / "broken-1.dist-info").mkdir()  # no METADATA: not listed
    assert python_distributions(tmp_path) == (("numpy", "2.4.6"), ("Pygments", "2.21.0"))


def test_platform_tags_go_down_from_the_roots_glibc() -> None:
    tags = platform_tags("2.36-9+deb12u10", "x86_64")
    assert tags[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags and "manylinux1_x86_64" in tags
    assert "manylinux_2_37_x86_64" not in tags
    with pytest.raises(ImageBuildError, match="cannot tell the glibc version"):
        platform_tags("unknown", "x86_64")


def test_requirement_lines_pin_name_version_and_hash(tmp_path: Path) -> None:
    wheel = tmp_path / "Foo_Bar-1.2.3-py3-none-any.whl"
    wheel.write_bytes(b"not really a zip")
    sha = hashlib.sha256(b"not really a zip").hexdigest()
    assert requirement_lines((wheel,)) == f"foo-bar==1.2.3 --hash=sha256:{sha}\n"


def _tree(root: Path, *, mtime: int) -> None:
    (root / "opt/airlock/bin").mkdir(parents=True)
    (root / "opt/airlock/bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "opt/airlock/bin/tool").chmod(0o755)
    (root / "opt/airlock/data.txt").write_text("data")
    (root / "opt/airlock/link").symlink_to("data.txt")
    (root / "var/lib/airlock").mkdir(parents=True)
    for path in root.rglob("*"):
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def test_layers_are_the_same_bytes_from_the_same_files(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    _tree(one, mtime=1000)
    _tree(two, mtime=999_999)  # other mtimes on disk: the tar carries the epoch instead
    paths = [*walk(one, "opt/airlock"), "var/lib/airlock"]
    owners = {"var/lib/airlock": (10001, 10001)}
    a = write_layer(one, paths, tmp_path / "a.tar", epoch=1_700_000_000, owners=owners)
    b = write_layer(two, paths, tmp_path / "b.tar", epoch=1_700_000_000, owners=owners)
    assert a.sha256 == b.sha256 == hashlib.sha256((tmp_path / "a.tar").read_bytes()).hexdigest()
    assert a.size == (tmp_path / "a.tar").stat().st_size
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:3] == ["opt", "opt/airlock", "opt/airlock/bin"], "ancestors first, sorted"
    assert "var" in names and "var/lib" in names
    by_name = {m.name: m for m in members}
    assert by_name["opt/airlock/link"].issym() and by_name["opt/airlock/link"].linkname == "data.txt"
    assert by_name["opt/airlock/bin/tool"].mode == 0o755
    assert (by_name["var/lib/airlock"].uid, by_name["var/lib/airlock"].gid) == (10001, 10001)
    assert by_name["opt/airlock/data.txt"].uid == 0
    assert {m.mtime for m in members} == {1_700_000_000}
    assert {m.uname for m in members} == {""}
    other = write_layer(one, paths, tmp_path / "c.tar", epoch=1_700_000_001, owners=owners)
    assert other.sha256 != a.sha256, "the epoch is in the tar"


def test_a_path_that_leaves_the_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="leaves the staged root"):
        with_ancestors(["opt/../../etc/passwd"])
    with pytest.raises(ImageBuildError, match="leaves the staged root"):
        write_layer(tmp_path, ["/etc/passwd"], tmp_path / "x.tar", epoch=0)


def test_a_device_cannot_go_in_a_layer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ImageBuildError, match="not a file, folder or link"):
        write_layer(tmp_path, ["fifo"], tmp_path / "x.tar", epoch=0)


def test_changed_since_finds_added_and_changed_paths(tmp_path: Path) -> None:
    _tree(tmp_path, mtime=1000)
    before = snapshot(tmp_path, "opt/airlock")
    (tmp_path / "opt/airlock/new.py").write_text("x = 1\n")
    (tmp_path / "opt/airlock/data.txt").write_text("changed, and longer")
    changed = changed_since(tmp_path, "opt/airlock", before)
    assert "opt/airlock/new.py" in changed and "opt/airlock/data.txt" in changed
    assert "opt/airlock/bin/tool" not in changed
    (tmp_path / "opt/airlock/bin/tool").unlink()
    with pytest.raises(ImageBuildError, match="removed by a later step"):
        changed_since(tmp_path, "opt/airlock", before)
