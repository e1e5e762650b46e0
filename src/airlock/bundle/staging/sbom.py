"""A CycloneDX 1.6 SBOM (JSON) of what a bundle carries: models, wheels, files and images, with hashes and
licences where known.

Models are ``machine-learning-model`` components with a ``pkg:huggingface`` purl (Hugging Face
sources) and one ``file`` sub-component per file; wheels are ``library`` components with a
``pkg:pypi`` purl and the licence from their METADATA (``License-Expression``, ``License`` or the
licence classifiers), and so are airlock's own wheels on the first volume (``--with-airlock``,
``bootstrap:`` refs); plain files are ``file`` components; images are ``container`` components with a
``pkg:oci`` purl pinned by digest (and the repository URL and tag), their platform and CUDA requirement
as properties, and one ``file`` sub-component per blob (manifest, config, each layer). The serial number is derived from the
content, so packing the same inputs twice gives the same SBOM.

Written by hand rather than with ``cyclonedx-python-lib``: the document is small and fixed, and the
library would add five dependencies to the staging side; the tests validate the output against the
CycloneDX schema.

Example::

    data = build_sbom(artifacts, collected, created="2025-01-01T00:00:00Z")
"""

from __future__ import annotations

import email.parser
import hashlib
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airlock import __version__
from airlock.bundle.format.manifest import Artifact, BootstrapFile, FileEntry, canonical_json
from airlock.bundle.staging.sources.base import Collected


def _hashes(f: FileEntry) -> list[dict[str, str]]:
    return [{"alg": "SHA-256", "content": f.sha256}]


def _file(f: FileEntry, ref: str) -> dict[str, Any]:
    return {"type": "file", "bom-ref": ref, "name": f.path, "hashes": _hashes(f)}


def _licenses(value: str | None, *, expression: bool = False) -> list[dict[str, Any]]:
    if not value:
        return []
    if expression:
        return [{"expression": value}]
    return [{"license": {"name": value}}]


def wheel_metadata(path: Path) -> dict[str, str]:
    """Name, version and licence from a wheel's ``*.dist-info/METADATA`` (empty if unreadable)."""
    try:
        with zipfile.ZipFile(path) as zf:
            name = next(
                (n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1), None
            )
            if name is None:
                return {}
            text = zf.read(name).decode("utf-8", "replace")
    except (OSError, zipfile.BadZipFile, KeyError):
        return {}
    msg = email.parser.Parser().parsestr(text, headersonly=True)
    out = {"name": msg.get("Name", ""), "version": msg.get("Version", "")}
    if msg.get("License-Expression"):
        out["license_expression"] = str(msg["License-Expression"])
    elif msg.get("License") and len(str(msg["License"])) < 100:
        out["license"] = str(msg["License"])
    else:
        classifiers = [
            c.split("::")[-1].strip() for c in msg.get_all("Classifier") or [] if c.startswith("License ::")
        ]
        if classifiers:
            out["license"] = classifiers[0]
    return out


def _purl_pypi(name: str, version: str) -> str:
    norm = name.lower().replace("_", "-").replace(".", "-")
    return f"pkg:pypi/{norm}@{version}"


def _model(artifact: Artifact) -> dict[str, Any]:
    ref = f"model:{artifact.name}"
    comp: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": ref,
        "name": artifact.repo or artifact.name,
        "version": artifact.source.commit or artifact.source.revision or "",
    }
    if artifact.source.type == "hf" and artifact.source.repo and artifact.source.commit:
        comp["purl"] = f"pkg:huggingface/{artifact.source.repo}@{artifact.source.commit}"
    licenses = _licenses(artifact.license)
    if licenses:
        comp["licenses"] = licenses
    comp["components"] = [_file(f, f"{ref}:{f.path}") for f in artifact.files]
    return comp


def _wheel(path: str, sha256: str, origin: Path | None, ref: str) -> dict[str, Any]:
    meta = wheel_metadata(origin) if origin is not None else {}
    comp: dict[str, Any] = {"type": "library", "bom-ref": ref, "name": meta.get("name") or path}
    if meta.get("version"):
        comp["version"] = meta["version"]
        comp["purl"] = _purl_pypi(comp["name"], meta["version"])
    comp["hashes"] = [{"alg": "SHA-256", "content": sha256}]
    licenses = _licenses(meta.get("license_expression"), expression=True) or _licenses(meta.get("license"))
    if licenses:
        comp["licenses"] = licenses
    comp["properties"] = [{"name": "airlock:file", "value": path}]
    return comp


def _wheels(artifact: Artifact, origins: dict[str, Path]) -> list[dict[str, Any]]:
    return [_wheel(f.path, f.sha256, origins.get(f.path), f"wheel:{f.path}") for f in artifact.files]


def _image(artifact: Artifact) -> dict[str, Any]:
    image = artifact.image
    assert image is not None  # an image artifact always describes its image (Artifact validates it)
    ref = f"image:{artifact.name}"
    name = image.repository.rsplit("/", 1)[-1]
    qualifiers = f"?repository_url={image.repository}" + (f"&tag={image.tag}" if image.tag else "")
    roles = {image.digest: "manifest", image.config_digest: "config", image.index_digest: "index"}
    properties = [
        {"name": "airlock:reference", "value": image.reference},
        {"name": "airlock:platform", "value": image.platform},
    ]
    for key, value in (
        ("airlock:index-digest", image.index_digest),
        ("airlock:cuda-version", image.cuda_version),
        ("airlock:nvidia-require-cuda", image.nvidia_require_cuda),
        ("airlock:vllm-version", image.vllm_version),
    ):
        if value:
            properties.append({"name": key, "value": value})
    return {
        "type": "container",
        "bom-ref": ref,
        "name": image.repository,
        "version": image.digest,
        "purl": f"pkg:oci/{name}@{image.digest.replace(':', '%3A')}{qualifiers}",
        "hashes": [{"alg": "SHA-256", "content": image.digest.removeprefix("sha256:")}],
        "properties": properties,
        "components": [
            {
                **_file(f, f"{ref}:{f.path}"),
                "description": roles.get(f"sha256:{f.sha256}", "layer"),
            }
            for f in artifact.files
        ],
    }


def build_sbom(
    artifacts: list[Artifact],
    collected: list[Collected],
    *,
    created: str,
    bootstrap: Sequence[tuple[BootstrapFile, Path]] = (),
) -> bytes:
    """``bootstrap``: airlock's own wheels on the first volume (``--with-airlock``), with where each is read."""
    origins = {c.name: {f.path: f.origin for f in c.files} for c in collected}
    components: list[dict[str, Any]] = [
        {**_wheel(f.path, f.sha256, origin, f"bootstrap:{f.path}"), "scope": "required"}
        for f, origin in bootstrap
    ]
    for artifact in artifacts:
        if artifact.kind == "model":
            components.append(_model(artifact))
        elif artifact.kind == "wheels":
            components.extend(_wheels(artifact, origins.get(artifact.name, {})))
        elif artifact.kind == "image":
            components.append(_image(artifact))
        else:
            components.extend(_file(f, f"file:{f.path}") for f in artifact.files)
    body: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": {"components": [{"type": "application", "name": "airlock", "version": __version__}]},
        },
        "components": components,
    }
    digest = hashlib.sha256(canonical_json(body)).digest()
    body["serialNumber"] = f"urn:uuid:{uuid.UUID(bytes=digest[:16], version=4)}"
    return canonical_json(body)
