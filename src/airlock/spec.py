"""The ``airlock.yaml`` schema: one file drives every verb (plan, pack, serve, bench).

Example::

    gateway:
      port: 8000
    models:
      - name: smollm2
        aliases: [default]
        gguf: models/SmolLM2-135M-Instruct.Q4_1.gguf
        engine: {kind: llamacpp, parallel: 4}
      - name: tiny-llama
        path: models/tiny-llama            # a Hugging Face-format folder
        engine: {kind: vllm, max_model_len: 1024, env: {VLLM_CPU_KVCACHE_SPACE: "1"}}
      - name: big
        engine: {kind: remote, url: "http://10.0.0.5:8000/v1", model: "meta-llama/Llama-3.1-70B"}

Relative paths are taken from the folder that holds the spec file. Unknown keys are errors, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    ByteSize,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from airlock.common.types import FrozenModel
from airlock.errors import SpecError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
_MIB = 1024 * 1024


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    """Make a relative path relative to the spec file's folder (passed as validation context)."""
    if value is None:
        return None
    value = value.expanduser()
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value


class GatewaySpec(FrozenModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    auth: bool = True
    max_body_bytes: ByteSize = Field(ByteSize(8 * _MIB), gt=0)
    max_tokens_limit: int = Field(131072, ge=1)
    max_n: int = Field(16, ge=1)
    request_timeout_s: float = Field(600.0, gt=0)
    metrics_auth: bool = True
    audit_log: Path | None = Field(None, description="append one JSON line per request to this file")

    _paths = field_validator("audit_log")(_resolve)


class _EngineBase(FrozenModel):
    args: list[str] = Field(default_factory=list, description="extra command-line arguments")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    startup_timeout_s: float = Field(300.0, gt=0)


class LlamaCppEngineSpec(_EngineBase):
    kind: Literal["llamacpp"]
    binary: Path | None = None
    parallel: int = Field(4, ge=1, le=256, description="slots for continuous batching (--parallel)")
    ctx_size: int = Field(8192, ge=0, description="total context over all slots (-c); 0: the model's")
    threads: int | None = Field(None, ge=1)
    startup_timeout_s: float = Field(120.0, gt=0)

    _paths = field_validator("binary")(_resolve)


class VllmEngineSpec(_EngineBase):
    kind: Literal["vllm"]
    python: Path | None = None
    max_model_len: int | None = Field(None, ge=16)
    dtype: str | None = None
    tensor_parallel_size: int | None = Field(None, ge=1)
    pipeline_parallel_size: int | None = Field(None, ge=1)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    max_num_seqs: int | None = Field(None, ge=1)
    image: str | None = Field(None, description="run this vllm/vllm-openai image instead of a local Python")
    container_runtime: Literal["docker", "podman"] = "docker"
    gpus: str = Field("all", description="the container's --gpus value")
    version: str | None = Field(
        None, description="vLLM release the site runs, for `airlock plan` (e.g. 0.11.0)"
    )
    startup_timeout_s: float = Field(900.0, gt=0)

    _paths = field_validator("python")(_resolve)


class RemoteEngineSpec(_EngineBase):
    kind: Literal["remote"]
    url: str = Field(description="base URL of an OpenAI-compatible API, e.g. http://10.0.0.5:8000/v1")
    model: str | None = Field(None, description="the model's name there (default: this model's name)")
    api_key_env: str | None = Field(None, description="environment variable that holds its API key")
    startup_timeout_s: float = Field(30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")


EngineSpec = Annotated[LlamaCppEngineSpec | VllmEngineSpec | RemoteEngineSpec, Field(discriminator="kind")]


class HFSource(FrozenModel):
    repo: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
    revision: str = "main"
    allow: list[str] = Field(default_factory=list)
    ignore: list[str] = Field(default_factory=list)


class ModelSpec(FrozenModel):
    name: str = Field(pattern=NAME_PATTERN)
    aliases: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(default_factory=list)
    path: Path | None = Field(None, description="a local Hugging Face-format folder")
    gguf: Path | None = Field(None, description="a single GGUF file")
    hf: HFSource | None = Field(None, description="a Hugging Face repo, served from the model store")
    engine: EngineSpec

    _paths = field_validator("path", "gguf")(_resolve)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        sources = [s for s in ("path", "gguf", "hf") if getattr(self, s) is not None]
        kind = self.engine.kind
        if kind == "remote":
            if sources:
                raise ValueError(f"a remote model takes no {sources[0]!r}: its weights live elsewhere")
            return self
        if len(sources) != 1:
            raise ValueError("give exactly one of 'path', 'gguf' or 'hf'")
        if kind == "llamacpp" and self.path is not None:
            raise ValueError("the llamacpp engine serves GGUF files: use 'gguf', not 'path'")
        if kind == "vllm" and self.gguf is not None:
            # vLLM's GGUF loader is experimental and needs the original tokenizer beside it.
            raise ValueError("serve GGUF files with the llamacpp engine; vllm takes 'path' or 'hf'")
        return self

    @property
    def names(self) -> list[str]:
        return [self.name, *self.aliases]


class WheelsSpec(FrozenModel):
    """Python wheels for the air-gapped hosts, fetched by ``pip download`` at pack time."""

    requirements: list[str] = Field(default_factory=list, description="e.g. ['vllm==0.6.3', 'airlock']")
    requirement_files: list[Path] = Field(default_factory=list)
    platforms: list[str] = Field(default_factory=list, description="e.g. ['manylinux2014_x86_64']")
    python_version: str | None = Field(None, pattern=r"^3(\.[0-9]+)?$", description="e.g. '3.11'")
    implementation: str | None = Field(None, pattern=r"^(cp|pp|py)$")
    abis: list[str] = Field(default_factory=list, description="e.g. ['cp311', 'abi3', 'none']")
    index_url: str | None = None
    extra_index_urls: list[str] = Field(default_factory=list)
    find_links: list[str] = Field(default_factory=list)
    no_index: bool = Field(False, description="only find_links, no index (pip --no-index)")
    no_deps: bool = False

    _paths = field_validator("requirement_files")(lambda v, info: [_resolve(p, info) for p in v])


class FileSpec(FrozenModel):
    """A plain file or folder (configs, licences) carried to the store's ``files/``."""

    path: Path
    dest: str | None = Field(None, description="its path under the store's files/ (default: its name)")

    _paths = field_validator("path")(_resolve)


class HardwareSpec(FrozenModel):
    """The site's GPUs, for `airlock plan` and the start check in serve (absent: plan for the CPU)."""

    gpu: str | None = Field(
        None, description="a catalog name, e.g. h100-80gb (see `airlock plan --list-gpus`)"
    )
    count: int = Field(1, ge=1, description="GPUs per server")
    gpu_memory: ByteSize | None = Field(None, description="per-GPU memory instead of a catalog name")
    driver: str | None = Field(None, pattern=r"^\d+(\.\d+){0,2}$", description="NVIDIA driver version")

    @model_validator(mode="after")
    def _one_kind(self) -> HardwareSpec:
        if (self.gpu is None) == (self.gpu_memory is None):
            raise ValueError("give exactly one of 'gpu' or 'gpu_memory'")
        return self


class Spec(FrozenModel):
    version: Literal[1] = 1
    store: Path | None = Field(None, description="airlock's model store (see `airlock install`)")
    hardware: HardwareSpec | None = Field(None, description="the site's GPUs, for `airlock plan`")
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    models: list[ModelSpec] = Field(default_factory=list)
    wheels: WheelsSpec | None = Field(None, description="wheels that `airlock pack` carries")
    files: list[FileSpec] = Field(default_factory=list, description="plain files that `airlock pack` carries")

    _paths = field_validator("store")(_resolve)

    @model_validator(mode="after")
    def _unique_names(self) -> Spec:
        seen: dict[str, str] = {}
        for model in self.models:
            for name in model.names:
                if name in seen:
                    raise ValueError(
                        f"model name {name!r} is used twice (by {seen[name]!r} and {model.name!r})"
                    )
                seen[name] = model.name
        return self


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_spec(data: Any, *, base_dir: Path | None = None, source: str = "spec") -> Spec:
    """Validate already-loaded data; ``base_dir`` anchors relative paths."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the top level must be a mapping, not {type(data).__name__}")
    try:
        return Spec.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise SpecError(f"{source}: {_format_validation(exc)}") from exc


def load_spec(path: Path) -> Spec:
    """Read and validate an airlock.yaml; every problem is a SpecError that names the file and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot be read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    return parse_spec(data, base_dir=path.parent.resolve(), source=str(path))
