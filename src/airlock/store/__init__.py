"""The model store on the air-gapped side: laid out like ``HF_HOME`` (see :mod:`airlock.store.layout`).

``airlock install`` fills it, ``airlock ls`` lists it, ``airlock inventory`` exports what it holds
and ``airlock serve`` resolves models in it (:mod:`airlock.store.resolve`).
"""

from airlock.store.db import StoreDb
from airlock.store.resolve import resolve_gguf, resolve_model_dir, snapshot_dir
from airlock.store.store import Store

__all__ = ["Store", "StoreDb", "resolve_gguf", "resolve_model_dir", "snapshot_dir"]
