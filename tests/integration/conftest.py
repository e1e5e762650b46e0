"""Fixtures that find the real engines. Missing engines fail loudly: `make test` installs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

import airlock.testing.write_tiny_llama as tiny_writer
from airlock.engines.llamacpp import locate_llama_server
from airlock.engines.vllm import locate_vllm_python
from airlock.errors import AirlockError
from airlock.image_build import BuiltImage, ImageBuildOptions, build_image
from airlock.serving.default_model import locate_default_model
from airlock.settings import Settings
from airlock.spec import LlamaCppEngineSpec, VllmEngineSpec
from airlock.testing.dockerd import running_dockerd
from harness import missing, need


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def llama_server(settings: Settings) -> Path:
    return locate_llama_server(LlamaCppEngineSpec(kind="llamacpp"), settings)


@pytest.fixture(scope="session")
def vllm_python(settings: Settings) -> Path:
    return locate_vllm_python(VllmEngineSpec(kind="vllm"), settings)


def write_tiny_llama(vllm_python: Path, out: Path, *args: str) -> Path:
    """A tiny random-weight Llama written by transformers in vLLM's environment."""
    subprocess.run(
        [str(vllm_python), tiny_writer.__file__, str(out), *args],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="session")
def tiny_model(vllm_python: Path) -> Callable[..., Path]:
    """``tiny_model(out, *writer_args)``: write_tiny_llama with vLLM's Python (any shape, any config class)."""
    return partial(write_tiny_llama, vllm_python)


@pytest.fixture(scope="session")
def tiny_llama(vllm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(vllm_python, tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """One real dockerd for the session, in its own network namespace (loopback only: no pull can
    leave the machine); its DOCKER_HOST. `make test` installs docker.io, so a missing one fails."""
    for binary in ("dockerd", "docker", "unshare"):
        need(binary)
    with running_dockerd() as host:
        yield host


# airlock's own image, built once per session for the tests that need it (image build, deploy compose)
IMAGE_TAG = "test"
IMAGE_EPOCH = 1_700_000_000
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def image_workdir() -> Iterator[Path]:
    """The session's folder for image layouts and the frozen source. Not pytest's tmp_path: pytest
    sessions started meanwhile on the same machine remove old numbered tmp folders, and builds are long."""
    with tempfile.TemporaryDirectory(prefix="airlock-image-test-") as name:
        yield Path(name)


@pytest.fixture(scope="session")
def image_options(settings: Settings, llama_server: Path, image_workdir: Path) -> ImageBuildOptions:
    """How the session builds airlock's image: from a copy of the checkout frozen at the start, so
    every build of the session takes the same source even while the working tree changes."""
    for tool in ("mmdebstrap", "umoci", "skopeo", "unshare", "chroot"):
        need(tool)
    if os.geteuid() != 0:
        missing("building the image needs root")
    try:
        model = locate_default_model(settings)
    except AirlockError as exc:
        missing(str(exc))
    source = image_workdir / "source"
    shutil.copytree(
        REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    )
    for path in (REPO / "pyproject.toml", REPO / "README.md", *REPO.glob("LICENSE*")):
        shutil.copy2(path, source / path.name)
    return ImageBuildOptions(
        out=image_workdir / "layout",
        model=model,
        llama_server=llama_server,
        source=source,
        cache=settings.cache / "image-build",
        tag=IMAGE_TAG,
        source_date_epoch=IMAGE_EPOCH,
    )


@pytest.fixture(scope="session")
def airlock_image(image_options: ImageBuildOptions) -> BuiltImage:
    return build_image(image_options)
