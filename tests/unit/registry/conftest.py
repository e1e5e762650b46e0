"""Fixtures for the image targets: the real tools (skopeo, umoci, docker-registry) and one registry
per session. A missing tool fails in CI (which installs them all) and skips elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.registry.push import RegistryTarget
from airlock.testing.registry import RunningRegistry
from harness import need


@pytest.fixture(scope="session")
def skopeo() -> str:
    return need("skopeo")


@pytest.fixture(scope="session")
def umoci() -> str:
    return need("umoci")


@pytest.fixture(scope="session")
def docker_client() -> str:
    return need("docker")


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    return tmp_path / "layout"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """One plain-http registry on 127.0.0.1 for the session; tests push to their own repositories."""
    need("docker-registry")
    with RunningRegistry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def target(registry: RunningRegistry) -> RegistryTarget:
    return RegistryTarget(f"http://{registry.host}")
