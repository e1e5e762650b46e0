"""Value types every layer shares: a strict frozen pydantic base, safe relative paths, SHA-256 digests, sizes.

Wire formats (the spec, the manifest, the store's database, the inventory, bench results) build on
:class:`FrozenModel`: unknown fields are errors and parsed values cannot change. A :data:`RelPath`
is checked when it is parsed, before anything touches the disk.

Example::

    class Blob(FrozenModel):
        path: RelPath
        sha256: Sha256
        size: Size
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
MAX_PATH: Final = 4096
_DRIVE = re.compile(r"^[A-Za-z]:")


class FrozenModel(BaseModel):
    """A wire type: unknown fields are refused, parsed values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a file name from disk that is not UTF-8 (surrogate escapes)
        return False
    return True


def check_relative_path(value: str) -> str:
    """Raise a pydantic ``unsafe_path`` error unless ``value`` is a safe relative POSIX path."""
    why = None
    if not value:
        why = "it is empty"
    elif len(value) > MAX_PATH:
        why = f"it is longer than {MAX_PATH} characters"
    elif "\x00" in value or any(ord(c) < 32 for c in value):
        why = "it holds a control character"
    elif "\\" in value:
        why = "it holds a backslash"
    elif not _utf8(value):
        why = "it is not valid UTF-8"
    elif value.startswith("/") or _DRIVE.match(value):
        why = "it is absolute"
    elif any(part in ("", ".", "..") for part in value.split("/")):
        why = "it has a '..', '.' or empty part"
    if why is not None:
        shown = value.encode("utf-8", "backslashreplace").decode("utf-8")
        raise PydanticCustomError("unsafe_path", "unsafe path {path!r}: {why}", {"path": shown, "why": why})
    return value


RelPath = Annotated[str, AfterValidator(check_relative_path)]
Sha256 = Annotated[str, Field(pattern=SHA256_RE.pattern)]
Size = Annotated[int, Field(ge=0)]


def parse_size(flag: str, text: str, *, examples: str = "4G, 25G, 1T, 700MiB") -> int:
    """A size as people write it (``25G``, ``700MiB``, ``1.5TiB``) for the option ``flag``: more than 0,
    else a ConfigError naming the flag and showing ``examples``."""
    from pydantic import ByteSize, TypeAdapter, ValidationError

    from airlock.errors import ConfigError

    try:
        size = int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError as exc:
        raise ConfigError(f"{flag} {text!r}: not a size (e.g. {examples})") from exc
    if size <= 0:
        raise ConfigError(f"{flag} {text!r}: must be more than 0")
    return size
