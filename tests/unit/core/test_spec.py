from __future__ import annotations

import re
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
        ("gatewy: {}", ":1:1: gatewy: unknown key 'gatewy'; did you mean 'gateway'?"),
        ("gateway: {port: 99999}", "gateway.port"),
        ("models: [{name: a, engine: {kind: llamacpp}}]", "exactly one of 'path', 'gguf' or 'hf'"),
        ("models: [{name: a, path: x, engine: {kind: llamacpp}}]", "use 'gguf', not 'path'"),
        ("models: [{name: a, gguf: x.gguf, engine: {kind: vllm}}]", "llamacpp engine"),
        (
            "models: [{name: a, path: x, engine: {kind: remote, url: 'http://h'}}]",
            "remote model takes no 'path'",
        ),
        ("models: [{name: a, engine: {kind: remote, url: 'ftp://h'}}]", "http:// or https://"),
        ("models: [{name: a, gguf: x, engine: {kind: tensorrt}}]", "unknown engine kind 'tensorrt'"),
        (
            "models: [{name: 'bad name', gguf: x, engine: {kind: llamacpp}}]",
            "models[0].name: 'bad name': use",
        ),
        (
            "models: [{name: a, gguf: x, engine: {kind: llamacpp}}, {name: b, aliases: [a], gguf: y, engine: {kind: llamacpp}}]",
            "'a' is used twice",
        ),
        ("models: [{name: a}]", "exactly one of 'path', 'gguf' or 'hf'"),
        ("images: [{ref: 'x:1', platform: amd64}]", "a platform such as linux/amd64"),
        ("images: [{reference: 'x:1'}]", "unknown key 'reference' (valid here: platform, ref, tls_verify)"),
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


def test_an_error_names_line_column_and_the_nearest_key_without_pydantic_segments(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """gateway:
  port: 8000
models:
  - name: smollm2
    gguf: x.gguf
    engine: {kind: llamacpp, paralel: 4}
""",
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.message.splitlines()[0] == (
        f"{path}:6:30: models[0].engine.paralel: unknown key 'paralel'; did you mean 'parallel'?"
    )
    assert "llamacpp.paralel" not in str(info.value)
    assert "Extra inputs" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "models:\n  - name: my model\n    gguf: x\n    engine: {kind: llamacpp}\n",
            ":2:11: models[0].name: 'my model': use 1-128 letters, digits or . _ : / @ + - (no spaces), "
            "starting with a letter or digit",
        ),
        (
            "models:\n  - name: a\n    gguf: x\n    engine: {kind: vllm}\n",
            ":2:5: models[0]: serve GGUF files with the llamacpp engine; vllm takes 'path' or 'hf'",
        ),
        (
            "models:\n  - name: a\n    engine:\n      kind: lamacpp\n",
            ":4:13: models[0].engine.kind: unknown engine kind 'lamacpp'; did you mean 'llamacpp'?",
        ),
        ("models:\n  - name: a\n    engine: {kind: remote}\n", ":3:13: models[0].engine.url: is required"),
        ("gateway:\n  port: http\n", ":2:9: gateway.port: must be a valid integer, not 'http'"),
        (
            "hardware: {gpu: h100-80gb, driver: new}\n",
            ":1:36: hardware.driver: 'new': an NVIDIA driver version",
        ),
        (
            "wheels:\n  no_idex: true\n",
            ":2:3: wheels.no_idex: unknown key 'no_idex'; did you mean 'no_index'?",
        ),
        ("gateway:\n  port: 1\n  port: 2\n", ":3:3: gateway.port: written twice (first on line 2)"),
    ],
)
def test_each_kind_of_problem_reads_as_a_rule_in_words(tmp_path: Path, text: str, line: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    first = info.value.message.splitlines()[0]
    assert first.startswith(f"{path}{line}"), first
    assert "Value error" not in first and "^[" not in first


def test_every_problem_is_reported_at_once_one_line_each(tmp_path: Path) -> None:
    path = write(
        tmp_path, "gateway: {prot: 1}\nmodels: [{name: a, gguf: x, engine: {kind: llamacpp, paralel: 2}}]\n"
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert len(info.value.problems) == 2
    assert [line.split(": ", 2)[1] for line in info.value.message.splitlines()] == [
        "gateway.prot",
        "models[0].engine.paralel",
    ]


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - name: a\n   bad: [\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.message.startswith(f"{path}:")
    assert ": not valid YAML: " in info.value.message
    assert "\n" not in info.value.message


def test_the_json_schema_accepts_the_readme_spec_and_refuses_a_typo() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    from airlock.spec import json_schema

    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    good = yaml.safe_load(
        """
gateway: {port: 8000, max_body_bytes: 8MiB}
hardware: {gpu: h100-80gb, count: 2}
models:
  - {name: smollm2, aliases: [default], gguf: m.gguf, engine: {kind: llamacpp, parallel: 4}}
  - {name: big, engine: {kind: remote, url: "http://10.0.0.5:8000/v1"}}
wheels: {requirements: [vllm==0.11.0], python_version: "3.11"}
files: [{path: licences/}]
"""
    )
    jsonschema.validate(good, schema)
    bad = {"models": [{"name": "a", "gguf": "m.gguf", "engine": {"kind": "llamacpp", "paralel": 4}}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def _laughs(levels: int) -> str:
    """Each level an alias list of ten of the one below: 10**levels values from a few hundred bytes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &a [*a]\n", "an alias refers to the anchor it stands in (a loop)"),
        ("models: &m [{name: x, engine: {kind: vllm}, aliases: *m}]\n", "(a loop)"),
        (_laughs(9), "expands to more than 100,000 values"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply to be a spec"),
    ],
)
def test_hostile_yaml_is_one_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    """Alias loops, alias bombs and deep nesting are refused at once, never a RecursionError or a hang."""
    with pytest.raises(SpecError, match=re.escape(fragment)):
        load_spec(write(tmp_path, text))


def test_anchors_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = (
        "models:\n"
        "- {name: a, path: m, engine: &vllm {kind: vllm, max_model_len: 1024}}\n"
        "- {name: b, path: n, engine: *vllm}\n"
        "- {name: c, path: o, engine: {<<: *vllm, dtype: float32}}\n"
    )
    spec = load_spec(write(tmp_path, text))
    assert [(m.name, m.engine.kind) for m in spec.models] == [("a", "vllm"), ("b", "vllm"), ("c", "vllm")]
    assert isinstance(spec.models[2].engine, VllmEngineSpec) and spec.models[2].engine.dtype == "float32"
    assert spec.models[2].engine.max_model_len == 1024


def test_a_model_without_engine_gets_the_engine_of_its_source(tmp_path: Path) -> None:
    """pack, plan and serve read the same spec: a GGUF file is llama.cpp's, a folder or repo vLLM's."""
    path = write(
        tmp_path,
        "models:\n  - {name: a, gguf: a.gguf}\n  - {name: b, path: b}\n  - {name: c, hf: {repo: org/c}}\n",
    )
    spec = load_spec(path)
    assert [type(m.engine) for m in spec.models] == [LlamaCppEngineSpec, VllmEngineSpec, VllmEngineSpec]
    assert spec.models[0].engine == LlamaCppEngineSpec(kind="llamacpp")


def test_images_are_strings_or_mappings() -> None:
    spec = parse_spec(
        {"images": ["vllm/vllm-openai:v0.11.0", {"ref": "oci-archive:a.tar", "platform": "linux/arm64/v8"}]},
        source="t",
    )
    assert [(i.ref, i.platform, i.tls_verify) for i in spec.images] == [
        ("vllm/vllm-openai:v0.11.0", None, True),
        ("oci-archive:a.tar", "linux/arm64/v8", True),
    ]
