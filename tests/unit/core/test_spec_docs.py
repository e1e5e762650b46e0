"""docs/spec.md documents every key of the schema, section by section, and its examples are valid
specs: a key added to spec.py without a line in the docs, or an example that rots, fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from airlock.spec import (
    FileSpec,
    GatewaySpec,
    HardwareSpec,
    HFSource,
    ImageSpec,
    LlamaCppEngineSpec,
    ModelSpec,
    RemoteEngineSpec,
    Spec,
    VllmEngineSpec,
    WheelsSpec,
    _unwrap,
    load_spec,
)

DOC = Path(__file__).parents[3] / "docs" / "spec.md"
ENGINE_COMMON = ("kind", "args", "env", "startup_timeout_s")

# Each schema class and the heading of its section in docs/spec.md.
SECTIONS: dict[type[BaseModel], str] = {
    Spec: "## Top level",
    GatewaySpec: "## `gateway`",
    ModelSpec: "## `models`",
    HFSource: "### `hf`",
    LlamaCppEngineSpec: "#### `kind: llamacpp`",
    VllmEngineSpec: "#### `kind: vllm`",
    RemoteEngineSpec: "#### `kind: remote`",
    HardwareSpec: "## `hardware`",
    WheelsSpec: "## `wheels`",
    FileSpec: "## `files`",
    ImageSpec: "## `images`",
}


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    level = heading.split(" ")[0]
    ends = [m.start() for m in re.finditer(rf"\n#{{1,{len(level)}}} ", text) if m.start() > start]
    return text[start : ends[0] if ends else len(text)]


def _reachable(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    seen.add(model)
    for field in model.model_fields.values():
        inner = _unwrap(field.annotation)
        if inner is not None and inner not in seen:
            _reachable(inner, seen)
    return seen


def test_every_schema_class_has_a_section() -> None:
    classes = _reachable(Spec, set()) | {LlamaCppEngineSpec, VllmEngineSpec, RemoteEngineSpec}
    assert classes == set(SECTIONS), "a new spec section needs a heading in docs/spec.md and here"


@pytest.mark.parametrize("model", list(SECTIONS), ids=lambda m: m.__name__)
def test_every_key_is_documented_in_its_section(model: type[BaseModel]) -> None:
    text = DOC.read_text()
    section = _section(text, SECTIONS[model])
    if model in (LlamaCppEngineSpec, VllmEngineSpec, RemoteEngineSpec):
        section += _section(text, "### `engine`").split("\n#### ")[0]  # the keys every engine takes
    missing = [key for key in model.model_fields if f"| `{key}` |" not in section]
    assert missing == [], f"{SECTIONS[model]} in docs/spec.md lacks a row for {missing}"
    if model not in (LlamaCppEngineSpec, VllmEngineSpec, RemoteEngineSpec):
        assert "```yaml" in section, f"{SECTIONS[model]} has no example"


def _examples() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("example", _examples())
def test_every_example_is_a_valid_spec(tmp_path: Path, example: str) -> None:
    path = tmp_path / "airlock.yaml"
    path.write_text(example)
    load_spec(path)


def test_the_examples_use_every_key() -> None:
    """Between them, the examples show every key of every section."""
    shown = "\n".join(_examples())
    unused = [
        f"{model.__name__}.{key}"
        for model in SECTIONS
        for key in model.model_fields
        if not re.search(rf"(^|[\s{{,]){key}:", shown, flags=re.M)
    ]
    assert unused == []


def test_the_readme_links_the_spec_reference() -> None:
    assert "docs/spec.md" in (DOC.parents[1] / "README.md").read_text()
