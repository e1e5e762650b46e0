"""Regenerate the vLLM architecture and quantization tables from vLLM releases themselves.

The facts come from vLLM's own source, read with :mod:`ast` (nothing is imported or run):

- architectures: the keys of the ``_*_MODELS`` dicts in ``vllm/model_executor/models/registry.py``;
- quantization methods: each ``QuantizationConfig`` class whose ``get_name()`` returns a literal, with
  the literal of its ``get_min_capability()`` (the lowest CUDA compute capability x 10 vLLM accepts).

Give it wheels (``pip download --no-deps --only-binary :all: vllm==X``) or unpacked ``site-packages``
folders; it merges into the JSON files in ``src/airlock/plan/data/`` and records each release's wheel name::

    .venv/bin/python scripts/gen_plan_tables.py ~/wheels/vllm-0.11.0-*.whl /opt/vllm/lib/python3.12/site-packages
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "src" / "airlock" / "plan" / "data"
ARCH_FILE = DATA / "vllm_architectures.json"
QUANT_FILE = DATA / "vllm_quantization.json"
_REGISTRY = "vllm/model_executor/models/registry.py"
_QUANT_DIR = "vllm/model_executor/layers/quantization/"
_SKIP = {"_PREVIOUSLY_SUPPORTED_MODELS", "_OOT_SUPPORTED_MODELS", "_ROCM_PARTIALLY_SUPPORTED_MODELS"}


def _files(source: Path) -> tuple[str, Iterator[tuple[str, str]]]:
    """(version, iterator of (relative path, text)) for a wheel or a site-packages folder."""
    if source.suffix == ".whl":
        zf = zipfile.ZipFile(source)
        names = zf.namelist()
        version = _version_from(names, lambda n: zf.read(n).decode())

        def read_zip() -> Iterator[tuple[str, str]]:
            for n in names:
                if n == _REGISTRY or (n.startswith(_QUANT_DIR) and n.endswith(".py")):
                    yield n, zf.read(n).decode("utf-8", "replace")

        return version, read_zip()
    root = source
    version = _version_from(
        [p.name for p in root.glob("vllm*.dist-info")], lambda n: (root / n / "METADATA").read_text()
    )

    def read_dir() -> Iterator[tuple[str, str]]:
        yield _REGISTRY, (root / _REGISTRY).read_text()
        for p in sorted((root / _QUANT_DIR).rglob("*.py")):
            yield str(p.relative_to(root)), p.read_text()

    return version, read_dir()


def _version_from(names: list[str], read: object) -> str:
    for n in names:
        m = re.match(r"vllm(?:_cpu)?-([^/]+?)\.dist-info", n)
        if m:
            return m.group(1)
    raise SystemExit(f"no vllm dist-info among {names[:5]}...")


def architectures(text: str) -> dict[str, str]:
    """Architecture name -> category (text_generation, multimodal, embedding, ...)."""
    found: dict[str, str] = {}
    for node in ast.parse(text).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if not (isinstance(target, ast.Name) and isinstance(value, ast.Dict)):
            continue
        name = target.id
        if not (name.startswith("_") and name.endswith("_MODELS")) or name in _SKIP:
            continue
        category = name.strip("_").removesuffix("_MODELS").lower()
        for key in value.keys:
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                found.setdefault(key.value, category)
    return found


def _literal_return(fn: ast.FunctionDef) -> object:
    for node in ast.walk(fn):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant):
            return node.value.value
    return None


def quant_methods(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for cls in (n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ClassDef)):
        fns = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}
        if "get_name" in fns and "get_min_capability" in fns:
            name, cap = _literal_return(fns["get_name"]), _literal_return(fns["get_min_capability"])
            if isinstance(name, str) and isinstance(cap, int):
                out[name] = cap
    return out


def main(argv: list[str]) -> None:
    arch = json.loads(ARCH_FILE.read_text()) if ARCH_FILE.exists() else {"releases": {}}
    quant = json.loads(QUANT_FILE.read_text()) if QUANT_FILE.exists() else {"releases": {}}
    for raw in argv:
        source = Path(raw)
        version, files = _files(source)
        archs: dict[str, str] = {}
        methods: dict[str, int] = {}
        for rel, text in files:
            if rel == _REGISTRY:
                archs = architectures(text)
            else:
                methods.update(quant_methods(text))
        origin = source.name if source.suffix == ".whl" else f"{_dist_name(source)}=={version} from PyPI"
        arch["releases"][version] = {"source": f"{origin}: {_REGISTRY}", "architectures": archs}
        quant["releases"][version] = {"source": f"{origin}: {_QUANT_DIR}**", "min_capability": methods}
        print(f"vllm {version}: {len(archs)} architectures, {len(methods)} quantization methods")
    for path, data in ((ARCH_FILE, arch), (QUANT_FILE, quant)):
        data["releases"] = dict(sorted(data["releases"].items(), key=lambda kv: _key(kv[0])))
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
        tmp.replace(path)


def _dist_name(root: Path) -> str:
    infos = sorted(root.glob("vllm*.dist-info"))
    return infos[0].name.split("-")[0].replace("_", "-") if infos else "vllm"


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3])


if __name__ == "__main__":
    main(sys.argv[1:])
