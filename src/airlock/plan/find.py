"""Where plan reads a model's facts: a local copy when there is one, else the Hub (headers only).

Order for a repo id (``org/name`` or ``org/name@revision``): the Hugging Face cache, then airlock's
store (``locate.py``: nothing downloaded), then, online, the Hub (``hub.py``: config, index and
shard headers, a few hundred kilobytes). Offline (``--offline`` or HF_HUB_OFFLINE=1) the Hub is
replaced by what an earlier online plan cached, and the error names every place tried. With
``hf_cache`` given, only that cache is looked in, as before.

Example::

    found = find_model("meta-llama/Llama-3.1-8B-Instruct@main", None, FindOptions(cache=s.cache, store=s.store))
    found.facts, found.folder, found.hub     # hub is set when the facts came from the Hub
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from airlock.errors import ConfigError, ModelNotFoundError
from airlock.plan.facts import ModelFacts, read_facts
from airlock.plan.hub import HubModel, HubOptions, cache_dir, cached_hub_model, read_hub_model
from airlock.plan.locate import REPO_ID, default_hf_cache, locate_model


@dataclass(frozen=True)
class FindOptions:
    cache: Path  # airlock's cache: the Hub facts an online plan read
    store: Path | None = None  # airlock's store
    hf_cache: Path | None = None  # look only in this HF cache or store
    offline: bool = False
    gguf: str | None = None  # a GGUF-only repo's file to plan
    endpoint: str | None = None  # default: HF_ENDPOINT
    token: str | None = None  # default: HF_TOKEN or the saved login
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass(frozen=True)
class FoundModel:
    facts: ModelFacts
    folder: Path | None = None  # a local copy (a folder or a GGUF file)
    hub: HubModel | None = None  # read from the Hub, or from airlock's cache of an earlier read


def split_revision(model: str, revision: str | None) -> tuple[str, str | None]:
    """``org/name@rev`` -> (``org/name``, ``rev``); the --revision flag must agree when both are given."""
    if "@" not in model or not REPO_ID.match(model.split("@", 1)[0]):
        return model, revision
    repo, _, rev = model.partition("@")
    if revision is not None and revision != rev:
        raise ConfigError(f"{model}: the revision is given twice ({rev!r} and --revision {revision!r})")
    return repo, rev or revision


def find_model(model: str, revision: str | None, options: FindOptions) -> FoundModel:
    """The facts of ``model``: a local path, a repo id in a local cache or store, else the Hub."""
    if Path(model).expanduser().exists():
        folder = Path(model).expanduser()
        return FoundModel(read_facts(folder), folder=folder)
    repo, rev = split_revision(model, revision)
    try:
        folder = locate_model(repo, cache_dir=options.hf_cache, revision=rev, store=options.store)
    except ModelNotFoundError:
        if options.hf_cache is not None or not REPO_ID.match(repo):
            raise
        hub = hub_facts(repo, rev, options)
        return FoundModel(hub.facts, hub=hub)
    return FoundModel(read_facts(folder), folder=folder)


def hub_facts(repo: str, revision: str | None, options: FindOptions) -> HubModel:
    """The repo's facts from the Hub, or offline from airlock's cache of an earlier online plan."""
    if options.offline:
        found = cached_hub_model(repo, revision, options.cache, gguf=options.gguf)
        if found is not None:
            return found
        shown = f"{repo}@{revision}" if revision else repo
        where = f"the Hugging Face cache at {default_hf_cache(dict(options.environ))}"
        if options.store is not None:
            where += f", airlock's store at {options.store}"
        raise ModelNotFoundError(
            f"{shown} is not in {where}, nor in what an online plan cached at {cache_dir(options.cache, repo)}",
            hint="offline: nothing is downloaded; plan it once online, install its bundle, or give its folder",
        )
    hub = HubOptions(
        cache=options.cache, revision=revision, endpoint=options.endpoint, token=options.token,
        gguf=options.gguf, environ=options.environ,
    )  # fmt: skip
    return read_hub_model(repo, hub)
