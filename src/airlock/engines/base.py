"""What the supervisor and the gateway need to know of an engine, whatever its kind.

An engine is described by an :class:`EngineConfig` (frozen): how to launch it (``None`` for a remote
URL), where it listens, which model name it answers to upstream and the internal API key the gateway
sends it. Each kind's module builds one from a :class:`~airlock.spec.ModelSpec`.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Set for every engine: nothing reaches the network, nothing phones home.
OFFLINE_ENV: Mapping[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}

#: Variables that never pass from airlock's environment to an engine (secrets of the gateway's own).
_NOT_INHERITED = ("AIRLOCK_", "OPENAI_API_KEY", "LLAMA_API_KEY", "VLLM_API_KEY", "LLAMA_ARG_")


@dataclass(frozen=True)
class Launch:
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path | None = None


@dataclass(frozen=True)
class EngineConfig:
    name: str  # the model it serves, under airlock's name
    kind: str  # llamacpp | vllm | remote
    base_url: str  # e.g. http://127.0.0.1:40123 (without /v1)
    upstream_model: str  # the model name the engine itself answers to
    launch: Launch | None  # None: not ours to start (remote)
    api_key: str | None = field(default=None, repr=False)  # sent upstream as a Bearer token
    health_path: str | None = "/health"  # None: readiness is the model list alone
    startup_timeout_s: float = 120.0
    version: str = "unknown"

    @property
    def models_url(self) -> str:
        return f"{self.base_url}/v1/models"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now. The engine binds it a moment later; a clash shows as a start failure."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def internal_api_key() -> str:
    """A per-run key the gateway sends to its engines, so a local user cannot bypass the gateway."""
    return secrets.token_urlsafe(32)


def engine_env(extra: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """airlock's environment minus its secrets, plus the spec's ``env``, then the offline variables.

    The offline variables come last: a spec cannot turn them off.
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith(_NOT_INHERITED)}
    env.update(extra)
    env.update(OFFLINE_ENV)
    return env
