"""docker_load's errors that need no daemon: no client, no daemon, a reference without a tag.
(Loading into a real dockerd: tests/integration/test_docker_load.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.errors import ConfigError, StoreError
from airlock.registry.docker_load import docker_load
from airlock.registry.oci import OciLayout
from airlock.testing.tiny_images import write_image


def test_a_missing_docker_client_is_named(layout: Path) -> None:
    digest = write_image(layout, "a", [{"x": b"1"}])
    with pytest.raises(StoreError, match=r"docker client .* is not installed"):
        docker_load(OciLayout.open(layout), [(digest, "a:1")], docker="no-such-docker-client")


def test_no_daemon_names_docker_host(docker_client: str, layout: Path, tmp_path: Path) -> None:
    digest = write_image(layout, "a", [{"x": b"1"}])
    host = f"unix://{tmp_path}/nothing.sock"
    with pytest.raises(StoreError, match="no docker daemon answers at unix://") as info:
        docker_load(OciLayout.open(layout), [(digest, "a:1")], docker_host=host)
    assert "DOCKER_HOST" in str(info.value)


@pytest.mark.parametrize("reference", ["reg.local/a", "reg.local/a@sha256:" + "0" * 64, "Upper:1"])
def test_a_reference_docker_cannot_tag_is_refused(
    layout: Path, reference: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = write_image(layout, "a", [{"x": b"1"}])
    monkeypatch.setattr("airlock.registry.docker_load.check_daemon", lambda **_: "test")
    with pytest.raises(ConfigError, match="NAME:TAG"):
        docker_load(OciLayout.open(layout), [(digest, reference)])
