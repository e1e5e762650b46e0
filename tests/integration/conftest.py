"""Fixtures that find the real engines. Missing engines fail loudly: `make test` installs them."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

import airlock.testing.write_tiny_llama as tiny_writer
from airlock.engines.llamacpp import locate_llama_server
from airlock.engines.vllm import locate_vllm_python
from airlock.settings import Settings
from airlock.spec import LlamaCppEngineSpec, VllmEngineSpec
from airlock.testing.dockerd import running_dockerd


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
        if shutil.which(binary) is None:
            if os.environ.get("CI"):
                pytest.fail(f"{binary} is not installed (scripts/install-system-deps.sh installs docker.io)")
            pytest.skip(f"{binary} is not installed")
    with running_dockerd() as host:
        yield host
