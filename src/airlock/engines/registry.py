"""Turn a spec's models into engine configs, one engine per model."""

from __future__ import annotations

from airlock.engines.base import EngineConfig, free_port, internal_api_key
from airlock.engines.llamacpp import llamacpp_engine
from airlock.engines.remote import remote_engine
from airlock.engines.vllm import vllm_engine
from airlock.settings import Settings
from airlock.spec import LlamaCppEngineSpec, RemoteEngineSpec, Spec, VllmEngineSpec
from airlock.store.resolve import spec_store


def build_engines(spec: Spec, settings: Settings) -> list[EngineConfig]:
    engines: list[EngineConfig] = []
    store = spec_store(spec, settings)  # where 'hf' models (and absent local ones) are found
    for model in spec.models:
        engine = model.engine
        if isinstance(engine, RemoteEngineSpec):
            engines.append(remote_engine(model, engine))
        elif isinstance(engine, LlamaCppEngineSpec):
            engines.append(
                llamacpp_engine(
                    model, engine, settings, port=free_port(), api_key=internal_api_key(), store=store
                )
            )
        elif isinstance(engine, VllmEngineSpec):
            engines.append(
                vllm_engine(
                    model, engine, settings, port=free_port(), api_key=internal_api_key(), store=store
                )
            )
    return engines
