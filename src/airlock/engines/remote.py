"""An OpenAI-compatible URL run by someone else: nothing to start, only to watch and route to."""

from __future__ import annotations

import os

from airlock.engines.base import EngineConfig
from airlock.errors import ConfigError
from airlock.spec import ModelSpec, RemoteEngineSpec


def remote_engine(model: ModelSpec, engine: RemoteEngineSpec) -> EngineConfig:
    api_key = None
    if engine.api_key_env:
        api_key = os.environ.get(engine.api_key_env)
        if not api_key:
            raise ConfigError(f"model {model.name!r}: environment variable {engine.api_key_env} is not set")
    base = engine.url.removesuffix("/v1")
    return EngineConfig(
        name=model.name,
        kind="remote",
        base_url=base,
        upstream_model=engine.model or model.name,
        launch=None,
        api_key=api_key,
        health_path=None,
        startup_timeout_s=engine.startup_timeout_s,
        version="remote",
    )
