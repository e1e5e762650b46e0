"""The manifest: the signed contract between the staging side and the air-gapped side.

It lists every logical file (its path, size and SHA-256, with the source and revision of the artifact
it belongs to), every blob (content-addressed, SHA-256) and where each blob's bytes lie on which
volume, plus the spec, airlock's version and the creation time. It is written as canonical JSON
(sorted keys, no spaces, UTF-8; see :func:`canonical_json`) and signed byte for byte; a reader
refuses a manifest that is not in canonical form, so two readers can never see different contents.

Every path is checked when the manifest is parsed, before anything is read from disk: a logical path
is relative, uses ``/``, and has no ``..``, ``.`` or empty part; a path on a volume must match
:data:`~airlock.bundle.format.layout.ENTRY_PATH_RE`.

Example::

    manifest = Manifest.from_bytes(Path("vol-0001/manifest.json").read_bytes())
    for artifact, file in manifest.iter_files():
        print(artifact.name, file.path, file.size)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from airlock.bundle.format import layout
from airlock.common.types import FrozenModel, RelPath, Sha256, Size, check_relative_path
from airlock.errors import BundleFormatError, UnsafePathError

M = TypeVar("M", bound=BaseModel)


def check_entry_path(value: str) -> str:
    check_relative_path(value)
    if not layout.ENTRY_PATH_RE.match(value):
        raise PydanticCustomError(
            "unsafe_path", "unsafe path {path}: not a blob or parity path", {"path": repr(value), "why": ""}
        )
    return value


EntryPath = Annotated[str, AfterValidator(check_entry_path)]
RepoId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$", max_length=200)]
Commit = Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]


class Source(FrozenModel):
    """Where an artifact came from; ``commit`` is what ``revision`` resolved to when it was packed."""

    type: Literal["hf", "local", "gguf", "pip", "file", "image"]
    repo: RepoId | None = None  # hf: the repo id
    revision: RelPath | None = None  # as asked: a branch, tag or commit
    commit: Commit | None = None  # hf: the git commit; local sources: a digest of their files
    path: str | None = None  # local sources: where they were read from (for the record)
    detail: str | None = None  # pip: the platform and Python the wheels are for; image: the transport


Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
IMAGE_BLOB_RE = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")


class ImageInfo(FrozenModel):
    """A container image as pack found it: what was asked, what it resolved to, what it needs.

    ``digest`` is the image manifest carried (the digest ``docker pull ...@digest`` gives upstream);
    ``index_digest`` the multi-platform index it was chosen from, if any. The image's files in the
    artifact are its OCI blobs (``blobs/sha256/<hex>``: manifest, config, layers, and the index).
    """

    reference: str = Field(min_length=1, max_length=512, description="as the spec gave it")
    repository: str = Field(min_length=1, max_length=256, description="e.g. docker.io/vllm/vllm-openai")
    tag: str | None = Field(None, max_length=128)
    digest: Digest
    index_digest: Digest | None = None
    media_type: str
    platform: str = Field(pattern=r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")
    config_digest: Digest
    layers: list[Digest]
    size: Size = Field(description="the manifest, config and layers as stored (compressed)")
    entrypoint: list[str] = Field(default_factory=list)
    cmd: list[str] = Field(default_factory=list)
    cuda_version: str | None = None  # the image's CUDA_VERSION
    nvidia_require_cuda: str | None = None  # NVIDIA_REQUIRE_CUDA: the driver constraint
    vllm_version: str | None = None  # from a label or env, where the image says it


class FileEntry(FrozenModel):
    path: RelPath
    size: Size
    sha256: Sha256


class Artifact(FrozenModel):
    """A model, a set of wheels, a set of plain files, or a container image (``image`` says which)."""

    kind: Literal["model", "wheels", "files", "image"]
    name: str = Field(min_length=1, max_length=256)
    repo: RepoId | None = Field(None, description="models: the repo id they take in the store")
    source: Source
    license: str | None = None
    files: list[FileEntry]
    image: ImageInfo | None = None

    @model_validator(mode="after")
    def _image(self) -> Artifact:
        if (self.kind == "image") != (self.image is not None):
            raise ValueError(f"{self.name}: an image artifact, and only one, describes its image")
        if self.image is None:
            return self
        by_hex: dict[str, FileEntry] = {}
        for f in self.files:
            match = IMAGE_BLOB_RE.match(f.path)
            if match is None or match.group(1) != f.sha256:
                raise ValueError(f"{self.name}: {f.path} is not blobs/sha256/<its own SHA-256>")
            by_hex[f.sha256] = f
        needed = [self.image.digest, self.image.config_digest, *self.image.layers]
        if self.image.index_digest is not None:
            needed.append(self.image.index_digest)
        missing = [d for d in needed if d.removeprefix("sha256:") not in by_hex]
        if missing:
            raise ValueError(f"{self.name}: the image's blob {missing[0]} is not in its files")
        return self

    @model_validator(mode="after")
    def _unique_paths(self) -> Artifact:
        paths = [f.path for f in self.files]
        seen = set(paths)
        if len(seen) != len(paths):
            raise ValueError(f"{self.name}: a path is listed twice")
        clash = seen & {parent for p in paths for parent in _parents(p)}
        if clash:
            raise ValueError(f"{self.name}: {sorted(clash)[0]!r} is both a file and a folder")
        return self


def _parents(path: str) -> Iterator[str]:
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


class Blob(FrozenModel):
    """One distinct content. ``carried`` is False when a base (``--base``) already holds it."""

    sha256: Sha256
    size: Size
    encoding: Literal["raw", "zstd"] = "raw"
    chunk: int | None = Field(None, gt=0, description="zstd: raw bytes per frame")
    group: Literal[1, 2, 4] = Field(1, description="zstd: bytes per value grouped by significance")
    frames: list[Size] = Field(default_factory=list, description="zstd: the stored size of each frame")
    carried: bool = True

    @model_validator(mode="after")
    def _encoding(self) -> Blob:
        if self.encoding == "raw" and (self.chunk is not None or self.frames or self.group != 1):
            raise ValueError(f"blob {self.sha256[:12]}: a raw blob has no chunk, frames or group")
        if self.encoding == "zstd" and (
            self.chunk is None or len(self.frames) != max(1, -(-self.size // self.chunk))
        ):
            raise ValueError(f"blob {self.sha256[:12]}: its frames do not match its size and chunk")
        return self

    @property
    def stored_size(self) -> int:
        return sum(self.frames) if self.encoding == "zstd" else self.size


class Entry(FrozenModel):
    """A blob, or one part of it, on a volume: raw bytes ``[offset, offset+length)`` of the blob."""

    path: EntryPath
    blob: Sha256 | None = None  # None for a parity share
    part: int | None = Field(None, ge=1)
    offset: Size = 0
    length: Size
    stored_size: Size
    stored_sha256: Sha256 | None = Field(
        None, description="of all the stored bytes; may be left out with chunks"
    )
    chunks: list[Sha256] = Field(
        default_factory=list, description="the SHA-256 of each chunk_size piece of the stored bytes"
    )

    @model_validator(mode="after")
    def _hashed(self) -> Entry:
        if self.stored_sha256 is None and not self.chunks:
            raise ValueError(f"{self.path}: neither a hash nor chunk hashes")
        return self

    def pieces(self, chunk_size: int) -> list[tuple[int, int, str]]:
        """(offset, length, sha256) of each piece of the stored bytes to check: one per chunk, or the whole."""
        if self.chunks:
            return [
                (off, n, sha)
                for (off, n), sha in zip(chunk_spans(self.stored_size, chunk_size), self.chunks, strict=True)
            ]
        assert self.stored_sha256 is not None  # the validator above
        return [(0, self.stored_size, self.stored_sha256)]


def chunk_spans(stored_size: int, chunk_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each chunk an entry is hashed by; none when it fits in one chunk (its whole
    hash covers it). The format's one rule for chunk hashes: ``_check_coverage`` holds every entry to it."""
    if stored_size <= chunk_size:
        return []
    return [(off, min(chunk_size, stored_size - off)) for off in range(0, stored_size, chunk_size)]


class Volume(FrozenModel):
    number: int = Field(ge=1)
    role: Literal["data", "parity"] = "data"
    entries: list[Entry]

    @property
    def name(self) -> str:
        return layout.volume_name(self.number)

    @property
    def stored_bytes(self) -> int:
        return sum(e.stored_size for e in self.entries)


class Parity(FrozenModel):
    """Reed-Solomon over the data volumes (zfec): any ``data_volumes`` of the shares rebuild them all."""

    scheme: Literal["zfec"] = "zfec"
    data_volumes: int = Field(ge=1)
    parity_volumes: int = Field(ge=1)
    block: int = Field(gt=0, description="bytes of each volume per row")
    rows: int = Field(ge=0)


class BaseRef(FrozenModel):
    kind: Literal["manifest", "inventory"]
    sha256: Sha256


class SbomRef(FrozenModel):
    sha256: Sha256
    size: Size


class BootstrapFile(FrozenModel):
    """A file of ``bootstrap/``: a plain name (a wheel's own file name), no folder."""

    path: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,200}$")
    size: Size
    sha256: Sha256


class Bootstrap(FrozenModel):
    """airlock itself on the first volume (``pack --with-airlock``), to install before anything is verified.

    ``bootstrap/`` holds airlock's wheel and its dependencies for ``target``, a pip requirements file
    pinning each by hash, ``bootstrap.sh`` and ``SHA256SUMS`` (every other file's hash, for plain
    ``sha256sum -c``). ``sums_sha256`` is the SHA-256 of SHA256SUMS, which pack prints.
    """

    volume: Literal[1] = 1
    target: str = Field(max_length=512, description="the platform and Python the wheels are for")
    airlock_version: str = Field(max_length=64)
    files: list[BootstrapFile]
    sums_sha256: Sha256

    @model_validator(mode="after")
    def _names(self) -> Bootstrap:
        names = [f.path for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError("bootstrap: a file is listed twice")
        sums = next((f for f in self.files if f.path == layout.BOOTSTRAP_SUMS), None)
        if sums is None or sums.sha256 != self.sums_sha256:
            raise ValueError(f"bootstrap: {layout.BOOTSTRAP_SUMS} is not listed with the hash recorded")
        return self


class Manifest(FrozenModel):
    format: Literal["airlock-bundle/1"] = layout.FORMAT
    created: str
    airlock_version: str
    volume_size: int | None = Field(None, gt=0, description="the most bytes per volume (None: one volume)")
    chunk_size: int = Field(gt=0, description="entries larger than this carry one hash per chunk")
    spec: dict[str, Any]
    artifacts: list[Artifact]
    blobs: list[Blob]
    volumes: list[Volume]
    parity: Parity | None = None
    base: BaseRef | None = None
    sbom: SbomRef | None = None
    bootstrap: Bootstrap | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        blobs = {b.sha256: b for b in self.blobs}
        if len(blobs) != len(self.blobs):
            raise ValueError("a blob is listed twice")
        names = [(a.kind, a.name) for a in self.artifacts]
        if len(set(names)) != len(names):
            raise ValueError("an artifact is listed twice")
        for artifact in self.artifacts:
            for f in artifact.files:
                blob = blobs.get(f.sha256)
                if blob is None or blob.size != f.size:
                    raise ValueError(f"{artifact.name}/{f.path}: its blob {f.sha256[:12]} is not listed")
        numbers = [v.number for v in self.volumes]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError("volumes must be numbered 1, 2, 3... in order")
        roles = [v.role for v in self.volumes]
        if "parity" in roles and roles.index("parity") != roles.count("data"):
            raise ValueError("parity volumes must come after the data volumes")
        if (self.parity is None) != ("parity" not in roles):
            raise ValueError("parity volumes and the parity section must come together")
        _check_coverage(self.volumes, blobs, self.chunk_size)
        return self

    # -- bytes -----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "manifest.json") -> Manifest:
        return parse_canonical(cls, data, source=source)

    def digest(self) -> str:
        """The bundle's id: the SHA-256 of its manifest's canonical bytes."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    # -- queries ---------------------------------------------------------------------------------
    def blob(self, sha256: str) -> Blob:
        for b in self.blobs:
            if b.sha256 == sha256:
                return b
        raise KeyError(sha256)

    def iter_files(self) -> Iterator[tuple[Artifact, FileEntry]]:
        for artifact in self.artifacts:
            for f in artifact.files:
                yield artifact, f

    @property
    def data_volumes(self) -> list[Volume]:
        return [v for v in self.volumes if v.role == "data"]

    def total_stored_bytes(self) -> int:
        return sum(v.stored_bytes for v in self.volumes)


def _check_coverage(volumes: list[Volume], blobs: dict[str, Blob], chunk_size: int) -> None:
    """Every carried blob's raw bytes are covered exactly once, part by part; nothing else is listed."""
    pieces: dict[str, list[Entry]] = {}
    for volume in volumes:
        paths = [e.path for e in volume.entries]
        if len(set(paths)) != len(paths):
            raise ValueError(f"volume {volume.number} lists a path twice")
        for e in volume.entries:
            want = len(chunk_spans(e.stored_size, chunk_size))
            if len(e.chunks) != want:
                raise ValueError(
                    f"volume {volume.number}: {e.path} needs {want} chunk hashes, has {len(e.chunks)}"
                )
            if volume.role == "parity":
                if e.blob is not None or not e.path.startswith(layout.PARITY_DIR + "/"):
                    raise ValueError(f"volume {volume.number}: a parity volume holds only parity shares")
                continue
            if e.blob is None or e.blob not in blobs:
                raise ValueError(f"volume {volume.number}: {e.path} belongs to no listed blob")
            blob = blobs[e.blob]
            if not blob.carried:
                raise ValueError(f"volume {volume.number}: {e.path} holds a blob marked as not carried")
            expected = layout.blob_path(e.blob, compressed=blob.encoding == "zstd", part=e.part)
            if e.path != expected:
                raise ValueError(f"volume {volume.number}: {e.path} should be named {expected}")
            if e.stored_size > blob.stored_size:
                raise ValueError(f"volume {volume.number}: {e.path} is larger than its blob")
            if blob.encoding == "raw" and e.stored_size != e.length:
                raise ValueError(f"volume {volume.number}: {e.path}: raw size {e.length} != {e.stored_size}")
            pieces.setdefault(e.blob, []).append(e)
    for sha, blob in blobs.items():
        parts = sorted(pieces.get(sha, []), key=lambda e: e.offset)
        if not blob.carried:
            continue
        if not parts:
            raise ValueError(f"blob {sha[:12]} is on no volume")
        whole = len(parts) == 1 and parts[0].part is None
        offset = 0
        for i, e in enumerate(parts, start=1):
            if not whole and e.part != i:
                raise ValueError(f"blob {sha[:12]}: part {e.part} where part {i} was expected")
            if e.offset != offset or (e.length == 0 and blob.size != 0):
                raise ValueError(f"blob {sha[:12]}: its parts leave a gap or overlap at byte {offset}")
            offset += e.length
        if offset != blob.size:
            raise ValueError(f"blob {sha[:12]}: its parts cover {offset} of {blob.size} bytes")
        if blob.encoding == "raw" and whole and parts[0].stored_sha256 != sha:
            raise ValueError(f"blob {sha[:12]}: a whole raw blob must be stored under its own hash")


class VolumeIndex(FrozenModel):
    """``volume.json``: what one volume is and holds, so it can be identified and checked on its own."""

    format: Literal["airlock-volume/1"] = layout.VOLUME_FORMAT
    bundle: Sha256
    number: int = Field(ge=1)
    count: int = Field(ge=1)
    role: Literal["data", "parity"]
    entries: list[Entry]

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "volume.json") -> VolumeIndex:
        return parse_canonical(cls, data, source=source)

    @classmethod
    def of(cls, manifest: Manifest, bundle: str, volume: Volume) -> VolumeIndex:
        return cls(
            bundle=bundle,
            number=volume.number,
            count=len(manifest.volumes),
            role=volume.role,
            entries=volume.entries,
        )


# -- canonical JSON --------------------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: one byte string for one value.

    Close to RFC 8785 (JCS) for what manifests hold (strings, integers, booleans, null, and the
    spec's few floats, which Python writes in their shortest round-trip form).
    """
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice")
        out[key] = value
    return out


def load_json_strict(data: bytes, *, source: str) -> Any:
    """Parse JSON, refusing duplicate keys (two readers must never see two different values)."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleFormatError(f"{source}: not valid JSON: {exc}") from exc


def parse_canonical(cls: type[M], data: bytes, *, source: str) -> M:
    """Validate ``data`` as ``cls``; unsafe paths raise UnsafePathError, anything else BundleFormatError."""
    raw = load_json_strict(data, source=source)
    try:
        value = cls.model_validate(raw)
    except ValidationError as exc:
        unsafe = [e for e in exc.errors() if e["type"] == "unsafe_path"]
        if unsafe:
            raise UnsafePathError(
                f"{source}: {unsafe[0]['msg']}", problems=tuple(e["msg"] for e in unsafe)
            ) from exc
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise BundleFormatError(f"{source}: {where}: {first['msg']}") from exc
    if canonical_json(raw) != data:
        raise BundleFormatError(f"{source}: not in canonical form (edited by hand, or by another tool)")
    return value


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
