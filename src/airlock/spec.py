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

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, NoReturn, get_args, get_origin

import yaml
from pydantic import (
    ByteSize,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from airlock.common.types import FrozenModel
from airlock.errors import SpecError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
HF_REPO_PATTERN = r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$"
PYTHON_VERSION_PATTERN = r"^3(\.[0-9]+)?$"
IMPLEMENTATION_PATTERN = r"^(cp|pp|py)$"
DRIVER_PATTERN = r"^\d+(\.\d+){0,2}$"
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
    stream_send_timeout_s: float = Field(
        30.0, gt=0, description="a streamed answer whose client reads nothing for this long is dropped"
    )
    shutdown_grace_s: int = Field(
        30, ge=0, description="on SIGTERM, how long requests in flight may take to finish"
    )
    metrics_auth: bool = True
    audit_log: Path | None = Field(None, description="append one JSON line per request to this file")
    audit_max_bytes: ByteSize = Field(
        ByteSize(100 * _MIB), gt=0, description="rotate the audit log when it passes this size"
    )
    audit_keep: int = Field(0, ge=0, description="rotated audit files to keep; 0 keeps them all")
    audit_text: Literal["off", "sha256", "full"] = Field(
        "sha256", description="prompt and response in the audit log: off, their SHA-256, or in full"
    )
    audit_flush_ms: int = Field(
        100, ge=1, le=10_000, description="fsync the audit log at least this often (what a crash can lose)"
    )
    audit_fail_open: bool = Field(
        False, description="serve on when the audit log cannot be written (default: refuse with 503)"
    )
    database: str | None = Field(
        None,
        pattern=r"^postgres(ql)?://",
        description="where keys, limits and usage live: postgresql://... shared by several gateways "
        "(default: SQLite, keys.db under AIRLOCK_HOME)",
    )
    require_all_engines: bool = Field(
        False, description="fail serve if any model fails its first start (as --require-all)"
    )
    engine_concurrency: int = Field(
        256, ge=1, description="requests in flight per engine; more wait in its queue"
    )
    engine_queue: int = Field(
        1024, ge=0, description="requests waiting per engine; beyond it, 503 at once (engine_overloaded)"
    )
    workers: int = Field(
        1, ge=1, le=256, description="gateway processes sharing the port (as --workers); engines run once"
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="seconds a client has to send a request's header (and the longest silence within "
        "its body); then it is closed",
    )
    max_header_bytes: ByteSize = Field(
        ByteSize(32 * 1024), ge=1024, description="a larger request line and headers get 431"
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description="client connections per gateway process; at the cap the oldest idle one is "
        "closed (default: from the descriptor limit, at most 4096)",
    )
    tls_cert: Path | None = Field(None, description="serve HTTPS with this PEM certificate (chain)")
    tls_key: Path | None = Field(None, description="the certificate's PEM private key")
    tls_client_ca: Path | None = Field(
        None, description="mutual TLS: only clients with a certificate signed by this PEM CA connect"
    )
    console_session_ttl_s: float = Field(
        8 * 3600.0, gt=0, le=7 * 86400, description="an operator console login lasts this long (seconds)"
    )

    _paths = field_validator("audit_log", "tls_cert", "tls_key", "tls_client_ca")(_resolve)

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewaySpec:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS)")
        return self


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
    embeddings: bool = Field(
        False, description="an embedding model: serve /v1/embeddings (--embeddings), not chat"
    )
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
    repo: str = Field(pattern=HF_REPO_PATTERN)
    revision: str = "main"
    allow: list[str] = Field(default_factory=list)
    ignore: list[str] = Field(default_factory=list)


def _engine_not_required(schema: dict[str, Any]) -> None:
    """The JSON schema: ``engine`` may be left out (the validator fills it in from the source)."""
    required = schema.get("required", [])
    if "engine" in required:
        required.remove("engine")


class ModelSpec(FrozenModel):
    name: str = Field(pattern=NAME_PATTERN)
    aliases: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(default_factory=list)
    path: Path | None = Field(None, description="a local Hugging Face-format folder")
    gguf: Path | None = Field(None, description="a single GGUF file")
    hf: HFSource | None = Field(None, description="a Hugging Face repo, served from the model store")
    engine: EngineSpec = Field(
        description="what serves it; default: llamacpp for 'gguf', vllm for 'path' or 'hf'"
    )

    model_config = FrozenModel.model_config | {"json_schema_extra": _engine_not_required}

    _paths = field_validator("path", "gguf")(_resolve)

    @model_validator(mode="before")
    @classmethod
    def _default_engine(cls, data: Any) -> Any:
        """No ``engine``: the one that serves the source (pack, plan and serve all take this one)."""
        if isinstance(data, dict) and data.get("engine") is None:
            if data.get("gguf") is not None:
                return {**data, "engine": {"kind": "llamacpp"}}
            if data.get("path") is not None or data.get("hf") is not None:
                return {**data, "engine": {"kind": "vllm"}}
            raise ValueError("give exactly one of 'path', 'gguf' or 'hf', or an engine of kind remote")
        return data

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
    python_version: str | None = Field(None, pattern=PYTHON_VERSION_PATTERN, description="e.g. '3.11'")
    implementation: str | None = Field(None, pattern=IMPLEMENTATION_PATTERN)
    abis: list[str] = Field(default_factory=list, description="e.g. ['cp311', 'abi3', 'none']")
    index_url: str | None = None
    extra_index_urls: list[str] = Field(default_factory=list)
    find_links: list[str] = Field(default_factory=list)
    no_index: bool = Field(False, description="only find_links, no index (pip --no-index)")
    no_deps: bool = False

    _paths = field_validator("requirement_files")(lambda v, info: [_resolve(p, info) for p in v])


IMAGE_TRANSPORTS = ("docker", "oci", "oci-archive", "docker-archive", "docker-daemon")
PLATFORM_PATTERN = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$"


class ImageSpec(FrozenModel):
    """A container image that `airlock pack` carries, pinned by digest (written as a string or a mapping)."""

    ref: str = Field(
        min_length=1,
        max_length=512,
        description="a reference with a tag or digest (vllm/vllm-openai:v0.11.0), or TRANSPORT:WHERE with "
        "a transport of " + ", ".join(IMAGE_TRANSPORTS) + " (oci-archive:images/app.tar)",
    )
    platform: str | None = Field(
        None, pattern=PLATFORM_PATTERN, description="os/arch[/variant] (default: pack's --platform)"
    )
    tls_verify: bool = Field(
        True, description="false: a registry over plain HTTP or an unverified certificate"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"ref": data} if isinstance(data, str) else data


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
    driver: str | None = Field(None, pattern=DRIVER_PATTERN, description="NVIDIA driver version")

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
    images: list[ImageSpec] = Field(
        default_factory=list,
        description="container images that `airlock pack` carries (a vllm engine's `image` is added by itself)",
    )

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


# Each pattern above, as the rule a user reads instead of the regular expression.
_PATTERN_WORDS = {
    NAME_PATTERN: "use 1-128 letters, digits or . _ : / @ + - (no spaces), starting with a letter or digit",
    HF_REPO_PATTERN: "a Hugging Face repo id: org/name, letters, digits, '.', '_' or '-'",
    PYTHON_VERSION_PATTERN: "a Python version such as 3 or 3.11",
    IMPLEMENTATION_PATTERN: "one of cp, pp or py",
    DRIVER_PATTERN: "an NVIDIA driver version such as 550.54.14",
    PLATFORM_PATTERN: "a platform such as linux/amd64 or linux/arm64/v8",
}

_ENGINE_MODELS: dict[str, type[FrozenModel]] = {
    "llamacpp": LlamaCppEngineSpec,
    "vllm": VllmEngineSpec,
    "remote": RemoteEngineSpec,
}

Marks = dict[tuple[str | int, ...], tuple[int, int]]  # a value's path -> (line, column), 1-based
KeyMarks = Marks  # a mapping key's path -> where the key itself is written


@dataclass(frozen=True)
class SpecProblem:
    """One problem in a spec: where (file, line, column, dotted path) and what, in words."""

    source: str
    where: str  # models[0].engine.parallel
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        place = self.source if self.line is None else f"{self.source}:{self.line}:{self.column}"
        return f"{place}: {self.where}: {self.message}" if self.where else f"{place}: {self.message}"


def _dotted(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _unwrap(annotation: Any) -> Any:
    """The model class a field holds (through Optional, list and Annotated), or None."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (list, tuple) or origin is UnionType or str(origin) == "typing.Union":
            inner = [a for a in get_args(annotation) if a is not type(None)]
            if len(inner) != 1:
                return None
            annotation = inner[0]
        else:
            return (
                annotation if isinstance(annotation, type) and issubclass(annotation, FrozenModel) else None
            )


def _model_at(path: tuple[str | int, ...], data: Any) -> type[FrozenModel] | None:
    """The schema class of the mapping at ``path`` in ``data`` (an engine by its ``kind``)."""
    model: type[FrozenModel] | None = Spec
    for part in path:
        if isinstance(part, int):
            data = data[part] if isinstance(data, list) and part < len(data) else None
            continue
        if model is None or part not in model.model_fields:
            return None
        data = data.get(part) if isinstance(data, dict) else None
        if model is ModelSpec and part == "engine":
            model = _ENGINE_MODELS.get(str(data.get("kind"))) if isinstance(data, dict) else None
        else:
            model = _unwrap(model.model_fields[part].annotation)
    return model


def _user_path(loc: tuple[str | int, ...], data: Any) -> tuple[str | int, ...]:
    """pydantic's location without its own segments (a union's tag, ``llamacpp``): only the keys and
    indexes that are in the file, and a missing key last."""
    path: list[str | int] = []
    for i, part in enumerate(loc):
        inside = isinstance(data, dict) and part in data
        if inside or (isinstance(data, list) and isinstance(part, int) and part < len(data)):
            data = data[part]
        elif i < len(loc) - 1:
            continue  # a tag or validator name that pydantic adds: not in the file
        else:
            data = None
        path.append(part)
    return tuple(path)


def _value(value: Any) -> str:
    return (
        repr(value) if isinstance(value, str | int | float | bool) or value is None else type(value).__name__
    )


def _in_words(err: ErrorDetails, path: tuple[str | int, ...], data: Any) -> str:
    """One pydantic error as a rule in words, with the nearest valid key or kind where one fits."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden" and path:
        model = _model_at(path[:-1], data)
        known = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(str(path[-1]), known, n=1)
        if close:
            return f"unknown key {path[-1]!r}; did you mean {close[0]!r}?"
        return f"unknown key {path[-1]!r} (valid here: {', '.join(known)})"
    if kind == "missing":
        return "is required"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        kinds = list(_ENGINE_MODELS)
        if kind == "union_tag_not_found":
            return f"needs a 'kind': one of {', '.join(kinds)}"
        close = difflib.get_close_matches(str(ctx.get("tag")), kinds, n=1)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown engine kind {ctx.get('tag')!r}{guess} (one of {', '.join(kinds)})"
    if kind == "string_pattern_mismatch":
        rule = _PATTERN_WORDS.get(str(ctx.get("pattern")), f"must match {ctx.get('pattern')}")
        return f"{_value(value)}: {rule}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping (key: value), not {_value(value)}"
    message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if message.startswith("Input should be "):
        message = "must be " + message.removeprefix("Input should be ").replace(
            "a valid dictionary", "a mapping"
        )
        message = message.split(", unable to")[0]
        if not isinstance(value, dict | list):
            message += f", not {_value(value)}"
    elif kind == "path_type":
        message = f"must be a path, not {_value(value)}"
    return message


#: More values than any spec holds: past it, aliases multiply a small file (a "billion laughs").
MAX_EXPANDED_VALUES = 100_000


def _check_aliases(root: yaml.Node, source: str) -> None:
    """Refuse an alias inside its own anchor (a loop) and aliases that multiply the file past
    :data:`MAX_EXPANDED_VALUES` values; both would hang or overflow everything that walks the spec."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in on_path:
            mark = node.start_mark
            raise SpecError(
                f"{source}:{mark.line + 1}:{mark.column + 1}: an alias refers to the anchor it stands in "
                "(a loop)",
                hint="write the value out, or anchor something that does not contain the alias",
            )
        if id(node) not in sizes:
            on_path.add(id(node))
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            sizes[id(node)] = min(1 + sum(size(child) for child in children), MAX_EXPANDED_VALUES + 1)
            on_path.discard(id(node))
        return sizes[id(node)]

    if size(root) > MAX_EXPANDED_VALUES:
        raise SpecError(
            f"{source}: through its aliases the spec expands to more than {MAX_EXPANDED_VALUES:,} values",
            hint="write the spec without nested aliases",
        )


def _marks(
    node: yaml.Node,
    path: tuple[str | int, ...],
    values: Marks,
    keys: KeyMarks,
    dupes: list[SpecProblem],
    source: str,
) -> None:
    values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line, column = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in seen and key != "<<":
                dupes.append(
                    SpecProblem(
                        source,
                        _dotted((*path, key)),
                        f"written twice (first on line {seen[key]}): YAML keeps only the last",
                        line,
                        column,
                    )
                )
            seen[key] = line
            keys[(*path, key)] = (line, column)
            _marks(value_node, (*path, key), values, keys, dupes, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _marks(item, (*path, i), values, keys, dupes, source)


def _problems(
    exc: ValidationError, data: Any, source: str, values: Marks, keys: KeyMarks
) -> list[SpecProblem]:
    problems = []
    for err in exc.errors():
        path = _user_path(tuple(err["loc"]), data)
        if err["type"] == "union_tag_invalid":
            path = (*path, "kind")  # point at the kind that is wrong
        found = keys.get(path) if err["type"] == "extra_forbidden" else None
        if found is None:  # the value's own place, else its nearest enclosing one (a missing key's mapping)
            found = next((values[path[:n]] for n in range(len(path), -1, -1) if path[:n] in values), None)
        line, column = found if found else (None, None)
        problems.append(SpecProblem(source, _dotted(path), _in_words(err, path, data), line, column))
    return problems


def _raise(problems: list[SpecProblem]) -> NoReturn:
    raise SpecError(
        "\n".join(str(p) for p in problems),
        hint="every key, with examples: docs/spec.md; `airlock spec schema` for editors",
        problems=tuple(problems),
    )


def parse_spec(data: Any, *, base_dir: Path | None = None, source: str = "spec") -> Spec:
    """Validate already-loaded data; ``base_dir`` anchors relative paths."""
    return _validate(data, base_dir=base_dir, source=source, values={}, keys={})


def _validate(data: Any, *, base_dir: Path | None, source: str, values: Marks, keys: KeyMarks) -> Spec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        line, column = values.get((), (None, None))
        _raise(
            [
                SpecProblem(
                    source,
                    "",
                    f"the top level must be a mapping (key: value), not a {type(data).__name__}",
                    line,
                    column,
                )
            ]
        )
    try:
        return Spec.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        _raise(_problems(exc, data, source, values, keys))


def load_spec(path: Path) -> Spec:
    """Read and validate an airlock.yaml; every problem is a SpecError whose lines name the file, line,
    column and key, and say the rule in words (``SpecError.problems`` holds them one by one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise SpecError(
            f"{path}: is a folder, not a spec file", hint=f"the spec is {path / 'airlock.yaml'}?"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot be read: {exc}") from exc
    source = str(path)
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise SpecError(f"{source}: nested too deeply to be a spec") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem, context = getattr(exc, "problem", None), getattr(exc, "context", None)
        what = f"{problem} ({context})" if problem and context else str(problem or exc)
        raise SpecError(f"{place}: not valid YAML: {what}") from exc
    values: Marks = {}
    keys: KeyMarks = {}
    dupes: list[SpecProblem] = []
    try:
        if node is not None:
            _check_aliases(node, source)
            _marks(node, (), values, keys, dupes, source)
        if dupes:
            _raise(dupes)
        return _validate(data, base_dir=path.parent.resolve(), source=source, values=values, keys=keys)
    except RecursionError:
        raise SpecError(f"{source}: nested too deeply to be a spec") from None


def json_schema() -> dict[str, Any]:
    """The spec's JSON Schema (draft 2020-12), for editors that validate airlock.yaml as it is typed
    (``# yaml-language-server: $schema=airlock.schema.json``)."""
    schema = Spec.model_json_schema(mode="validation")
    _drop_pydantic_keywords(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "airlock.yaml",
        "description": "airlock's spec: the models to plan, pack and serve, and the gateway in front of them",
    }


def _drop_pydantic_keywords(node: Any) -> None:
    """pydantic writes ``gt``/``ge`` beside ByteSize's anyOf, which no JSON Schema validator knows."""
    if isinstance(node, dict):
        for word in ("gt", "ge", "lt", "le"):
            node.pop(word, None)
        for value in node.values():
            _drop_pydantic_keywords(value)
    elif isinstance(node, list):
        for value in node:
            _drop_pydantic_keywords(value)
