"""The pure parts of the image build: options checked when made, labels made from what the image holds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from airlock.errors import ConfigError
from airlock.image_build.labels import created, image_labels
from airlock.image_build.options import DEFAULT_PACKAGES, BuiltImage, Contents, ImageBuildOptions, Layer


def options(**changes: object) -> ImageBuildOptions:
    base = ImageBuildOptions(
        out=Path("/tmp/out"),
        model=Path("/m.gguf"),
        llama_server=Path("/bin/llama-server"),
        source=Path("/src"),
        cache=Path("/cache"),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


CONTENTS = Contents(
    airlock_version="0.1.0",
    airlock_revision="abc123",
    debian_suite="bookworm",
    debian_epoch=1_700_000_000,
    debian_packages=(("libc6:amd64", "2.36-9"), ("python3", "3.11.2-1")),
    python_version="3.11",
    python_packages=(("airlock", "0.1.0"), ("numpy", "2.4.6")),
    wheel_hashes=(
        ("numpy-2.4.6-cp311-cp311-manylinux_2_17_x86_64.whl", "ab" * 32),
        ("airlock-0.1.0-py3-none-any.whl", "ef" * 32),
        ("Aiohttp-3.14.5-cp311-cp311-manylinux_2_17_x86_64.whl", "01" * 32),
    ),
    llama_cpp_commit="0c1e57098bba43ac29e6e3b677cdceebdd22334f",
    llama_cpp_native="ON",
    model_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    model_sha256="cd" * 32,
    model_size=98_362_432,
)


def test_the_defaults_are_valid() -> None:
    made = options()
    assert made.tag == "latest"
    assert made.port == 8080
    assert "python3-venv" in made.packages and "libgomp1" in made.packages
    assert made.packages == DEFAULT_PACKAGES


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"tag": "has space"}, "--tag 'has space': not a tag"),
        ({"tag": "-leading"}, "not a tag"),
        ({"tag": "x" * 129}, "not a tag"),
        ({"packages": ("python3", "Bad_Name")}, "Debian package 'Bad_Name': not a package name"),
        ({"packages": ("x",)}, "not a package name"),
        ({"packages": ()}, "no Debian packages"),
        ({"suite": "Book Worm"}, "not a Debian suite name"),
        ({"source_date_epoch": -1}, "before 1970"),
        ({"port": 0}, "port 0: not a port number"),
        ({"port": 70000}, "not a port number"),
        ({"mirrors": ()}, "no Debian mirror"),
    ],
)
def test_wrong_options_are_refused_when_made(changes: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        options(**changes)
    assert said in caught.value.message
    assert caught.value.exit_code == 2


def test_created_is_rfc3339_utc() -> None:
    assert created(0) == "1970-01-01T00:00:00Z"
    assert created(1_700_000_000) == "2023-11-14T22:13:20Z"


def test_labels_name_what_the_image_holds() -> None:
    labels = image_labels(CONTENTS, epoch=1_800_000_000)
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.revision"] == "abc123"
    assert labels["org.opencontainers.image.created"] == "2027-01-15T08:00:00Z"
    assert labels["org.opencontainers.image.title"] == "airlock"
    assert labels["io.airlock.debian.created"] == "2023-11-14T22:13:20Z"
    assert labels["io.airlock.debian.packages"] == "libc6:amd64=2.36-9 python3=3.11.2-1"
    assert labels["io.airlock.python.packages"] == "airlock=0.1.0 numpy=2.4.6"
    assert labels["io.airlock.llama-cpp.commit"] == CONTENTS.llama_cpp_commit
    assert labels["io.airlock.model.sha256"] == "cd" * 32
    assert labels["io.airlock.model.size"] == "98362432"
    assert list(labels) == sorted(labels), "labels come sorted, so the config is the same bytes each time"
    assert all(isinstance(v, str) and v for v in labels.values())


def test_summary_is_json_ready() -> None:
    import json

    built = BuiltImage(
        layout=Path("/tmp/img"),
        tag="v1",
        manifest_digest="sha256:" + "1" * 64,
        config_digest="sha256:" + "2" * 64,
        layers=(
            Layer("debian", "sha256:" + "3" * 64, "sha256:" + "4" * 64, 100, 300),
            Layer("airlock", "sha256:" + "5" * 64, "sha256:" + "6" * 64, 20, 50),
        ),
        labels=image_labels(CONTENTS, epoch=0),
        contents=CONTENTS,
        entrypoint=("/opt/airlock/venv/bin/airlock",),
        cmd=("serve",),
        env=("A=b",),
    )
    data = json.loads(json.dumps(built.summary()))
    assert data["reference"] == "oci:/tmp/img:v1"
    assert data["size"] == 120
    assert data["contents"]["model_sha256"] == "cd" * 32
    assert data["layers"][0]["name"] == "debian"
    assert data["requirements_lock"] == (
        f"aiohttp==3.14.5 --hash=sha256:{'01' * 32}\nnumpy==2.4.6 --hash=sha256:{'ab' * 32}\n"
    ), "sorted, airlock's own wheel left out (it is built from the checkout)"
