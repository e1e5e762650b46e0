"""What a bench run is asked to do: the endpoint, the load levels, the workload, the bounds and the SLOs.

Everything here is a frozen dataclass checked on construction, plus the parsers the CLI uses for
its compact flags, so a typo is a :class:`~airlock.errors.ConfigError` that names the flag::

    parse_levels("1,8,32", "--concurrency")        # (1.0, 8.0, 32.0)
    parse_slo("ttft=500ms,itl=50ms")               # Slo(ttft_s=0.5, itl_s=0.05, e2e_s=None)
    parse_seconds("2m", "--duration")              # 120.0
    normalise_url("http://127.0.0.1:8000")         # 'http://127.0.0.1:8000/v1'

A run is always bounded: by ``requests`` per level, by ``duration_s`` per level, or by both (the
first reached stops the level). With neither, a level lasts :data:`DEFAULT_DURATION_S`.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from airlock.common.words import counted
from airlock.errors import ConfigError

DEFAULT_DURATION_S = 30.0
LoadKind = Literal["concurrency", "rate"]
Arrival = Literal["poisson", "constant"]
Endpoint = Literal["chat", "completions"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_SECONDS = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*(ms|s|m|min|h)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Load:
    """One load level: ``concurrency`` users each sending the next request when the last ends
    (closed loop), or requests arriving at ``rate`` per second whatever the server does (open loop)."""

    kind: LoadKind
    value: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value > 0):
            raise ConfigError(f"a load level must be a positive number, not {self.value}")
        if self.kind == "concurrency" and self.value != int(self.value):
            raise ConfigError(f"concurrency must be a whole number of users, not {self.value}")

    @property
    def users(self) -> int:
        return int(self.value)

    @property
    def label(self) -> str:
        if self.kind == "concurrency":
            return counted(self.users, "user")
        return f"{self.value:g} req/s"


@dataclass(frozen=True)
class Slo:
    """Service-level objectives a request must meet to count towards goodput (None: not checked)."""

    ttft_s: float | None = None
    itl_s: float | None = None
    e2e_s: float | None = None

    @property
    def empty(self) -> bool:
        return self.ttft_s is None and self.itl_s is None and self.e2e_s is None

    def as_dict(self) -> dict[str, float]:
        """The objectives that are set, in seconds, by name (as the results file records them)."""
        pairs = (("ttft", self.ttft_s), ("itl", self.itl_s), ("e2e", self.e2e_s))
        return {name: value for name, value in pairs if value is not None}

    def describe(self) -> str:
        return ", ".join(f"{name}<={value * 1000:g}ms" for name, value in self.as_dict().items()) or "none"


@dataclass(frozen=True)
class BenchOptions:
    """A whole run. ``url`` is the API base (``.../v1``); ``model`` None: the endpoint's only model.

    ``prompt_tokens`` applies to synthetic prompts (``dataset`` None); ``dataset`` is a JSONL path or
    ``builtin:NAME``. ``output_tokens`` is sent as ``max_tokens`` unless a dataset line sets its own.
    ``seed`` (prompts, arrivals) is fresh for every run unless given, and recorded in the results:
    a server's prefix cache then never sees one run's prompts again in the next, and a run can
    still be repeated exactly.
    """

    url: str
    loads: tuple[Load, ...]
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    requests: int | None = None
    duration_s: float | None = None
    arrival: Arrival = "poisson"
    prompt_tokens: int = 256
    output_tokens: int = 128
    dataset: str | None = None
    endpoint: Endpoint = "chat"
    ignore_eos: bool = False
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    slo: Slo = field(default_factory=Slo)
    timeout_s: float = 300.0
    warmup: int = 0
    seed: int = field(default_factory=lambda: secrets.randbelow(2**31))

    def __post_init__(self) -> None:
        if not self.loads:
            raise ConfigError("give at least one load level (--concurrency or --rate)")
        if len({load.kind for load in self.loads}) > 1:
            raise ConfigError("use --concurrency or --rate in one run, not both")
        if self.requests is not None and self.requests < 1:
            raise ConfigError(f"--requests must be at least 1, not {self.requests}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"--duration must be positive, not {self.duration_s}")
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise ConfigError("--prompt-tokens and --output-tokens must be at least 1")
        if not self.timeout_s > 0:
            raise ConfigError(f"--timeout must be positive, not {self.timeout_s}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be 0 or more, not {self.warmup}")
        for key in ("model", "messages", "prompt", "stream", "stream_options"):
            if key in self.extra_body:
                raise ConfigError(f"--extra-body may not set {key!r}: the benchmark sets it")

    @property
    def bound_duration_s(self) -> float | None:
        """The per-level time bound in force: the one given, or the default when no bound is."""
        if self.duration_s is None and self.requests is None:
            return DEFAULT_DURATION_S
        return self.duration_s


def parse_seconds(text: str, flag: str) -> float:
    """``"500ms"``, ``"2.5s"``, ``"3m"``, ``"1h"`` or a bare number of seconds."""
    match = _SECONDS.match(text)
    if not match:
        raise ConfigError(f"{flag}: {text!r} is not a duration (examples: 500ms, 30s, 2m)")
    value = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if not value > 0:
        raise ConfigError(f"{flag}: {text!r} must be positive")
    return value


def parse_levels(text: str, flag: str) -> tuple[float, ...]:
    """A comma-separated list of positive numbers, e.g. ``"1,4,16,64"`` or ``"0.5,2"``."""
    values: list[float] = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(f"{flag}: {part.strip()!r} is not a number (example: 1,4,16)") from None
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{flag}: {part.strip()!r} must be a positive number")
        values.append(value)
    return tuple(values)


def parse_slo(text: str) -> Slo:
    """``"ttft=500ms,itl=50ms,e2e=10s"``: any of the three, each once, each with its unit.

    A bare number is refused rather than guessed: the tables show milliseconds, and ``ttft=500``
    read as seconds would count every request as good.
    """
    found: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in ("ttft", "itl", "e2e"):
            raise ConfigError(f"--slo: {part!r} is not ttft=..., itl=... or e2e=... (example: ttft=500ms)")
        if name in found:
            raise ConfigError(f"--slo: {name} is given twice")
        bare = _SECONDS.match(value)
        if bare and bare.group(2) is None:  # ttft=500: milliseconds or seconds? The user says which.
            n = bare.group(1)
            raise ConfigError(
                f"--slo: {part!r} has no unit: write {name}={n}ms (milliseconds) or {name}={n}s (seconds)"
            )
        found[name] = parse_seconds(value, f"--slo {name}")
    if not found:
        raise ConfigError("--slo: give at least one of ttft=..., itl=..., e2e=...")
    return Slo(ttft_s=found.get("ttft"), itl_s=found.get("itl"), e2e_s=found.get("e2e"))


def normalise_url(url: str) -> str:
    """The API base: ``http://host:port`` gains ``/v1``; a URL with a path is taken as it is."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{url!r} is not an http:// or https:// URL (example: http://127.0.0.1:8000/v1)")
    if parts.query or parts.fragment:
        raise ConfigError(f"{url!r}: give the API base without a query or fragment")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path or '/v1'}"
