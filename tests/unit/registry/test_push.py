"""Pushing images into a real registry (Debian's docker-registry on 127.0.0.1), read back with skopeo."""

from __future__ import annotations

import io
import json
import random
import subprocess
from pathlib import Path
from typing import BinaryIO

import pytest

from airlock.errors import ConfigError, IntegrityError, StoreError
from airlock.registry.oci import OciLayout
from airlock.registry.push import BlobSource, RegistryTarget, image_exists, layout_image, push_image
from airlock.testing.registry import TEST_PASSWORD, TEST_USER, RunningRegistry, free_port
from airlock.testing.tiny_images import write_image

BASE = {"etc/os-release": b"ID=tiny\n", "usr/lib/base.bin": random.Random(1).randbytes(200_000)}
APP_V1 = {"opt/app/version": b"1\n"}
APP_V2 = {"opt/app/version": b"2\n"}


def _image(layout: Path, ref: str, layers: list[dict[str, bytes]]) -> tuple[bytes, str, list[BlobSource]]:
    digest = write_image(layout, ref, layers)
    return layout_image(OciLayout.open(layout), digest)


def _raw(skopeo: str, ref: str) -> bytes:
    out = subprocess.run(
        [skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out.stdout


def test_push_keeps_the_manifest_bytes_and_digest(
    skopeo: str, registry: RunningRegistry, target: RegistryTarget, layout: Path
) -> None:
    manifest, media_type, blobs = _image(layout, "app:1", [BASE, APP_V1])
    result = push_image(target, "push/app", "1", manifest, media_type, blobs)
    assert (result.pushed_blobs, result.skipped_blobs) == (3, 0)
    assert result.bytes_sent == sum(b.size for b in blobs)
    assert result.reference == f"{registry.host}/push/app@{result.digest}"
    assert _raw(skopeo, result.reference) == manifest
    assert _raw(skopeo, f"{registry.host}/push/app:1") == manifest
    info = json.loads(
        subprocess.run(
            [skopeo, "inspect", "--tls-verify=false", f"docker://{registry.host}/push/app:1"],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
    )
    assert info["Digest"] == result.digest
    assert image_exists(target, "push/app", result.digest)
    assert not image_exists(target, "push/app", "sha256:" + "0" * 64)


def test_a_second_version_pushes_only_what_changed(
    registry: RunningRegistry, target: RegistryTarget, layout: Path
) -> None:
    m1, t1, b1 = _image(layout, "app:1", [BASE, APP_V1])
    push_image(target, "delta/app", "1", m1, t1, b1)
    m2, t2, b2 = _image(layout, "app:2", [BASE, APP_V2])
    result = push_image(target, "delta/app", "2", m2, t2, b2)
    # the base layer is shared; the config and the app layer are new
    assert (result.pushed_blobs, result.skipped_blobs) == (2, 1)
    assert result.bytes_sent == b2[0].size + b2[2].size
    again = push_image(target, "delta/app", "2", m2, t2, b2)
    assert (again.pushed_blobs, again.skipped_blobs, again.bytes_sent) == (0, 3, 0)
    assert again.digest == result.digest


def test_a_corrupt_blob_is_refused_and_never_lands(
    registry: RunningRegistry, target: RegistryTarget, layout: Path
) -> None:
    manifest, media_type, blobs = _image(layout, "app:1", [BASE, APP_V1])
    good = blobs[1]
    data = bytearray(Path(OciLayout.open(layout).blob_path(good.digest)).read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = BlobSource(good.digest, good.size, lambda: io.BytesIO(bytes(data)))
    with pytest.raises(IntegrityError, match=good.digest.removeprefix("sha256:")):
        push_image(target, "corrupt/app", "1", manifest, media_type, [blobs[0], bad, blobs[2]], workers=1)
    assert not registry.has_blob("corrupt/app", good.digest)
    assert not image_exists(target, "corrupt/app", manifest_digest(manifest))
    # a short blob is refused the same way
    short = BlobSource(good.digest, good.size, lambda: io.BytesIO(bytes(data[:-10])))
    with pytest.raises(IntegrityError, match="does not match"):
        push_image(target, "corrupt/app", "1", manifest, media_type, [short])
    assert not registry.has_blob("corrupt/app", good.digest)


def manifest_digest(manifest: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(manifest).hexdigest()


class _StopsRegistry(io.RawIOBase):
    """A blob reader that stops the registry after its first chunk: the registry dies mid-upload."""

    def __init__(self, path: Path, registry: RunningRegistry) -> None:
        self._f = path.open("rb")
        self._registry = registry
        self._reads = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self._reads += 1
        if self._reads == 3:
            self._registry.stop()
        return self._f.read(size)

    def close(self) -> None:
        self._f.close()
        super().close()


def test_a_registry_down_mid_push_then_a_rerun_pushes_only_what_is_missing(
    tmp_path: Path, layout: Path
) -> None:
    rng = random.Random(7)
    layers = [
        {"big": rng.randbytes(3_000_000)},
        {"mid": rng.randbytes(2_500_000)},
        {"small": rng.randbytes(4000)},
    ]
    manifest, media_type, blobs = _image(layout, "app:1", layers)
    big, mid, small = blobs[1], blobs[2], blobs[3]
    assert big.size > mid.size > small.size > blobs[0].size  # pushed largest first with one worker
    with RunningRegistry(tmp_path / "reg") as reg:
        target = RegistryTarget(reg.host, plain_http=True)
        path = OciLayout.open(layout).blob_path(mid.digest)
        dying = BlobSource(mid.digest, mid.size, lambda: _StopsRegistry(path, reg))  # type: ignore[arg-type, return-value]
        with pytest.raises(StoreError) as info:
            push_image(
                target, "resume/app", "1", manifest, media_type, [blobs[0], big, dying, small], workers=1
            )
        assert reg.host in str(info.value)
        assert "rerun" in str(info.value)
        assert reg.has_blob("resume/app", big.digest)
        assert not reg.has_blob("resume/app", mid.digest)
        reg.start()
        result = push_image(target, "resume/app", "1", manifest, media_type, blobs, workers=1)
        assert (result.pushed_blobs, result.skipped_blobs) == (3, 1)
        assert result.bytes_sent == blobs[0].size + mid.size + small.size
        assert image_exists(target, "resume/app", result.digest)


def test_an_unreachable_registry_is_named_with_the_flag_to_change() -> None:
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(StoreError, match=f"cannot reach the registry at {host}") as info:
        push_image(RegistryTarget(host, plain_http=True), "x", "1", b"{}", "application/json", [])
    assert "--registry" in str(info.value)


def test_tls_to_a_plain_http_registry_names_the_tls_flags(registry: RunningRegistry) -> None:
    with pytest.raises(StoreError, match="TLS") as info:
        push_image(RegistryTarget(registry.host), "x", "1", b"{}", "application/json", [])
    assert "--registry-ca-file" in str(info.value)
    assert "--registry-tls-verify" in str(info.value)


def test_basic_auth_from_the_environment(
    tmp_path: Path, layout: Path, monkeypatch: pytest.MonkeyPatch, skopeo: str
) -> None:
    manifest, media_type, blobs = _image(layout, "app:1", [APP_V1])
    with RunningRegistry(tmp_path / "reg", basic_auth=True) as reg:
        target = RegistryTarget(reg.host, plain_http=True)
        monkeypatch.delenv("AIRLOCK_REGISTRY_USERNAME", raising=False)
        monkeypatch.delenv("AIRLOCK_REGISTRY_PASSWORD", raising=False)
        with pytest.raises(StoreError, match="AIRLOCK_REGISTRY_USERNAME"):
            push_image(target, "auth/app", "1", manifest, media_type, blobs)
        monkeypatch.setenv("AIRLOCK_REGISTRY_USERNAME", TEST_USER)
        monkeypatch.setenv("AIRLOCK_REGISTRY_PASSWORD", "wrong")
        with pytest.raises(StoreError, match="AIRLOCK_REGISTRY_PASSWORD"):
            push_image(target, "auth/app", "1", manifest, media_type, blobs)
        monkeypatch.setenv("AIRLOCK_REGISTRY_PASSWORD", TEST_PASSWORD)
        result = push_image(target, "auth/app", "1", manifest, media_type, blobs)
        assert image_exists(target, "auth/app", result.digest)
        out = subprocess.run(
            [skopeo, "inspect", "--raw", "--tls-verify=false", "--creds", f"{TEST_USER}:{TEST_PASSWORD}",
             f"docker://{result.reference}"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        assert out.stdout == manifest


def test_bearer_token_flow(tmp_path: Path, layout: Path) -> None:
    manifest, media_type, blobs = _image(layout, "app:1", [APP_V1])
    with RunningRegistry(tmp_path / "reg", token=True) as reg:
        target = RegistryTarget(reg.host, plain_http=True, username="u", password="p")
        result = push_image(target, "token/app", "1", manifest, media_type, blobs)
        assert result.pushed_blobs == 2
        assert reg.token_server is not None
        asked = [path for path, _ in reg.token_server.requests]
        assert any("scope=repository%3Atoken%2Fapp%3Apull%2Cpush" in p for p in asked), asked
        assert all(auth is not None and auth.startswith("Basic ") for _, auth in reg.token_server.requests)


def test_push_by_digest_without_a_tag(target: RegistryTarget, layout: Path, skopeo: str) -> None:
    manifest, media_type, blobs = _image(layout, "app:1", [APP_V1])
    result = push_image(target, "bydigest/app", None, manifest, media_type, blobs)
    assert _raw(skopeo, result.reference) == manifest


@pytest.mark.parametrize(("repo", "tag"), [("Upper/case", "1"), ("ok", "bad tag"), ("../x", None)])
def test_bad_names_are_refused_before_any_request(repo: str, tag: str | None) -> None:
    with pytest.raises(ConfigError):
        push_image(RegistryTarget("127.0.0.1:1", plain_http=True), repo, tag, b"{}", "x", [])


def test_a_blob_source_reads_once_per_upload(target: RegistryTarget, layout: Path) -> None:
    manifest, media_type, blobs = _image(layout, "app:1", [{"only": b"once"}])
    opened: list[str] = []

    def counted(b: BlobSource) -> BlobSource:
        def open_() -> BinaryIO:
            opened.append(b.digest)
            return b.open()

        return BlobSource(b.digest, b.size, open_)

    push_image(target, "once/app", "1", manifest, media_type, [counted(b) for b in blobs])
    assert sorted(opened) == sorted(b.digest for b in blobs)


def test_https_with_a_ca_file_or_without_verification(tmp_path: Path, layout: Path, skopeo: str) -> None:
    manifest, media_type, blobs = _image(layout, "app:1", [APP_V1])
    with RunningRegistry(tmp_path / "reg", tls=True) as reg:
        with pytest.raises(StoreError, match="TLS with the registry") as info:
            push_image(RegistryTarget(reg.host), "tls/app", "1", manifest, media_type, blobs)
        assert "--registry-ca-file" in str(info.value)
        result = push_image(
            RegistryTarget(reg.host, ca_file=reg.ca_file), "tls/app", "1", manifest, media_type, blobs
        )
        assert result.pushed_blobs == 2
        again = push_image(
            RegistryTarget(f"https://{reg.host}", tls_verify=False),
            "tls/app",
            "2",
            manifest,
            media_type,
            blobs,
        )
        assert (again.pushed_blobs, again.digest) == (0, result.digest)
        assert _raw(skopeo, f"{reg.host}/tls/app:2") == manifest
    with pytest.raises(ConfigError, match="CA file"):
        push_image(RegistryTarget("127.0.0.1:1", ca_file=tmp_path / "none.pem"), "x", "1", b"{}", "x", [])
