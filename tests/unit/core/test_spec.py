from __future__ import annotations

from pathlib import Path

import pytest

from airlock.errors import SpecError
from airlock.spec import LlamaCppEngineSpec, RemoteEngineSpec, VllmEngineSpec, load_spec, parse_spec


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "airlock.yaml"
    path.write_text(text)
    return path


def test_full_spec_parses_and_anchors_relative_paths(tmp_path: Path) -> None:
    spec = load_spec(
        write(
            tmp_path,
            """
gateway: {port: 9000, max_body_bytes: 2MiB, auth: true}
models:
  - name: smollm2
    aliases: [default, small]
    gguf: models/smol.gguf
    engine: {kind: llamacpp, parallel: 8, threads: 2}
  - name: tiny
    path: /abs/tiny
    engine: {kind: vllm, max_model_len: 1024, env: {VLLM_CPU_KVCACHE_SPACE: "1"}}
  - name: far
    engine: {kind: remote, url: "http://10.0.0.5:8000/v1/", model: upstream}
""",
        )
    )
    assert spec.gateway.port == 9000
    assert spec.gateway.max_body_bytes == 2 * 1024 * 1024
    smol, tiny, far = spec.models
    assert smol.gguf == tmp_path / "models/smol.gguf"
    assert smol.names == ["smollm2", "default", "small"]
    assert isinstance(smol.engine, LlamaCppEngineSpec)
    assert smol.engine.parallel == 8
    assert tiny.path == Path("/abs/tiny")
    assert isinstance(tiny.engine, VllmEngineSpec)
    assert tiny.engine.env == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    assert isinstance(far.engine, RemoteEngineSpec)
    assert far.engine.url == "http://10.0.0.5:8000/v1"


def test_empty_file_is_an_empty_spec(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, "")).models == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("gatewy: {}", "gatewy: Extra inputs are not permitted"),
        ("gateway: {port: 99999}", "gateway.port"),
        ("models: [{name: a, engine: {kind: llamacpp}}]", "exactly one of 'path', 'gguf' or 'hf'"),
        ("models: [{name: a, path: x, engine: {kind: llamacpp}}]", "use 'gguf', not 'path'"),
        ("models: [{name: a, gguf: x.gguf, engine: {kind: vllm}}]", "llamacpp engine"),
        (
            "models: [{name: a, path: x, engine: {kind: remote, url: 'http://h'}}]",
            "remote model takes no 'path'",
        ),
        ("models: [{name: a, engine: {kind: remote, url: 'ftp://h'}}]", "http:// or https://"),
        ("models: [{name: a, gguf: x, engine: {kind: tensorrt}}]", "does not match any of the expected tags"),
        ("models: [{name: 'bad name', gguf: x, engine: {kind: llamacpp}}]", "models.0.name"),
        (
            "models: [{name: a, gguf: x, engine: {kind: llamacpp}}, {name: b, aliases: [a], gguf: y, engine: {kind: llamacpp}}]",
            "'a' is used twice",
        ),
        ("- just\n- a list", "must be a mapping"),
        ("models: [unclosed", "not valid YAML"),
    ],
)
def test_bad_specs_name_the_file_and_field(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.exit_code == 2


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")


def test_parse_spec_rejects_non_mapping() -> None:
    with pytest.raises(SpecError, match="must be a mapping"):
        parse_spec([1, 2])
