"""Plan a model on the Hugging Face Hub without its weights: a few kilobytes read, counted and cached.

What is read, through huggingface_hub's HTTP session and headers (so HF_TOKEN or a saved login, and
HF_ENDPOINT for a mirror, hold as for a download):

1. ``GET /api/models/{repo}/revision/{revision}?blobs=true``: the commit the revision points at, and
   every file with its size and LFS SHA-256 (what ``model_info(files_metadata=True)`` reads);
2. ``config.json``, ``generation_config.json`` and ``model.safetensors.index.json`` at that commit;
3. each shard's first 16 KiB (``Range: bytes=0-16383``), and the rest of its header when it is longer;
   in a repo with only GGUF files, the chosen file's header and tensor table, a growing prefix at a time.

The requests are made here rather than with ``HfApi.get_safetensors_metadata`` because that asks
100,000 bytes of every shard (3 MB for a 30-shard model) and neither it nor ``model_info`` says how
many bytes it read; the errors are still huggingface_hub's own (``hf_raise_for_status``).

What was read is cached under airlock's cache, ``AIRLOCK_CACHE/hub-facts/models--org--name/``: one
JSON file per commit (the listing, the small files, each header's bytes) and ``refs/<revision>``,
each written atomically, so a second plan of the same commit reads nothing and an error leaves
nothing behind. Not in the Hugging Face cache: a header alone placed there would look to
``snapshot_download`` (and so to ``airlock pack``) like a downloaded shard.

Example::

    m = read_hub_model("meta-llama/Llama-3.1-70B-Instruct", HubOptions(cache=Settings.from_env().cache))
    m.commit, m.facts.weight_bytes, m.read.bytes      # ('1605565b...', 141107412992, 597_003)
"""

from __future__ import annotations

import base64
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import ValidationError

from airlock.common.fileio import write_atomic
from airlock.common.types import FrozenModel
from airlock.errors import AirlockError, ConfigError, ModelFactsError, ModelNotFoundError
from airlock.formats.safetensors import SafetensorsHeader
from airlock.plan.facts import (
    SAFETENSORS_INDEX,
    ModelFacts,
    facts_from_gguf,
    from_config,
    index_shards,
    json_object,
    weight_sizes,
)
from airlock.plan.hub_file import PrefixFile, read_gguf_header, read_safetensors_header

DEFAULT_ENDPOINT = "https://huggingface.co"
HEADER_PROBE = 16 * 1024  # the first range of each shard: a whole header, for most shards
SMALL_FILE_LIMIT = 16 * 1024 * 1024  # config.json and the index; a larger one is refused
TIMEOUT_S = 30.0
SMALL_FILES = ("config.json", "generation_config.json", SAFETENSORS_INDEX)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubOptions:
    cache: Path  # airlock's cache (Settings.cache); the facts go under hub-facts/
    revision: str | None = None  # branch, tag or commit (default: main)
    endpoint: str | None = None  # default: HF_ENDPOINT, else huggingface.co
    token: str | None = None  # default: HF_TOKEN, else the saved login
    gguf: str | None = None  # the GGUF file to plan in a repo with several
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    workers: int = 8  # shard headers fetched at once


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str | None = None  # LFS files


@dataclass(frozen=True)
class HubRead:
    """What one plan fetched: requests made and body bytes received (0 and 0 from the cache)."""

    requests: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class HubModel:
    repo: str
    revision: str
    commit: str
    endpoint: str
    files: tuple[HubFile, ...]
    facts: ModelFacts
    read: HubRead
    cache_file: Path
    gguf: str | None = None  # the GGUF file planned (a repo without safetensors)

    @property
    def label(self) -> str:
        return f"{self.repo}@{self.commit[:12]}"


class _CachedFile(FrozenModel):
    path: str
    size: int
    sha256: str | None = None


class HubFactsRecord(FrozenModel):
    """One commit's facts as cached: the listing, the small files as read, each header's bytes (base64)."""

    format: Literal[1] = 1
    repo: str
    commit: str
    endpoint: str
    files: list[_CachedFile]
    texts: dict[str, str]
    headers: dict[str, str]
    gguf: str | None = None


def endpoint_of(options: HubOptions) -> str:
    return (options.endpoint or options.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_env(environ: Mapping[str, str]) -> bool:
    """HF_HUB_OFFLINE set as huggingface_hub reads it (1, true, yes, on)."""
    return environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_dir(cache: Path, repo: str) -> Path:
    return cache / "hub-facts" / f"models--{repo.replace('/', '--')}"


def read_hub_model(repo: str, options: HubOptions) -> HubModel:
    """The model's facts read from the Hub (or from airlock's cache of an earlier read of the commit)."""
    revision = options.revision or "main"
    endpoint = endpoint_of(options)
    folder = cache_dir(options.cache, repo)
    if _COMMIT.match(revision) and (cached := load_cached(folder, revision)) is not None:
        return _model(cached, revision, HubRead(), folder / f"{revision}.json", options.gguf)
    client = _Client(endpoint, options.token, repo, revision)
    commit, files = client.listing()
    cached = load_cached(folder, commit)
    if cached is None or (options.gguf and options.gguf not in cached.headers):
        cached = _fetch(client, commit, files, options)
        write_atomic(folder / f"{commit}.json", cached.model_dump_json(indent=1).encode())
    write_atomic(folder / "refs" / quote(revision, safe=""), commit.encode())
    return _model(cached, revision, client.read(), folder / f"{commit}.json", options.gguf)


def cached_hub_model(
    repo: str, revision: str | None, cache: Path, *, gguf: str | None = None
) -> HubModel | None:
    """The facts an earlier online plan cached for ``repo`` at ``revision`` (offline); None if none."""
    folder = cache_dir(cache, repo)
    rev = revision or "main"
    commit = rev
    if not _COMMIT.match(rev):
        try:
            commit = (folder / "refs" / quote(rev, safe="")).read_text().strip()
        except OSError:
            return None
    record = load_cached(folder, commit)
    if record is None:
        return None
    return _model(record, rev, HubRead(), folder / f"{commit}.json", gguf)


def load_cached(folder: Path, commit: str) -> HubFactsRecord | None:
    """The record cached for ``commit``; None when absent or unreadable (it is fetched again)."""
    try:
        return HubFactsRecord.model_validate_json((folder / f"{commit}.json").read_bytes())
    except (OSError, ValidationError):
        return None


# --- reading the Hub ---------------------------------------------------------------------------


class _Client:
    """Requests to one Hub for one repo, through huggingface_hub's session, each counted."""

    def __init__(self, endpoint: str, token: str | None, repo: str, revision: str) -> None:
        from huggingface_hub import get_session

        # documented as huggingface_hub.utils.build_hf_headers; its stub does not mark the re-export
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        self.endpoint, self.repo, self.revision = endpoint, repo, revision
        self.session = get_session()
        self.headers = build_hf_headers(token=token)
        self._lock = threading.Lock()
        self._requests = self._bytes = 0

    def read(self) -> HubRead:
        with self._lock:
            return HubRead(self._requests, self._bytes)

    def listing(self) -> tuple[str, list[HubFile]]:
        """The commit the revision points at, and every file with its size."""
        url = f"{self.endpoint}/api/models/{self.repo}/revision/{quote(self.revision, safe='')}?blobs=true"
        raw = self.get(url, limit=SMALL_FILE_LIMIT)
        info = json_object(raw, Path(f"{self.endpoint}/api/models/{self.repo}"))
        commit = info.get("sha")
        siblings = info.get("siblings")
        if not isinstance(commit, str) or not isinstance(siblings, list):
            raise AirlockError(
                f"the Hub at {self.endpoint} answered for {self.repo} without a commit or a file list",
                hint="is HF_ENDPOINT a Hugging Face Hub or a mirror of one?",
            )
        files = [
            HubFile(str(s["rfilename"]), int(s.get("size") or 0), (s.get("lfs") or {}).get("sha256"))
            for s in siblings
            if isinstance(s, dict) and isinstance(s.get("rfilename"), str)
        ]
        return commit, files

    def file_url(self, commit: str, path: str) -> str:
        return f"{self.endpoint}/{self.repo}/resolve/{commit}/{quote(path)}"

    def get(self, url: str, *, limit: int, start: int | None = None) -> bytes:
        """The body (at most ``limit`` bytes, from ``start`` with a range request); errors translated."""
        headers = dict(self.headers)
        if start is not None:
            headers["Range"] = f"bytes={start}-{start + limit - 1}"
        chunks: list[bytes] = []
        got = 0
        with self._errors(), self.session.stream("GET", url, headers=headers, timeout=TIMEOUT_S) as r:
            try:
                if r.status_code >= 400:
                    r.read()
                    from huggingface_hub import hf_raise_for_status

                    hf_raise_for_status(r)
                if start is not None and start > 0 and r.status_code != 206:
                    raise AirlockError(
                        f"the Hub at {self.endpoint} ignores range requests (status {r.status_code})",
                        hint="plan needs only file headers: use a Hub or mirror that serves byte ranges",
                    )
                for chunk in r.iter_bytes():
                    chunks.append(chunk)
                    got += len(chunk)
                    if got >= limit:
                        break
            finally:
                with self._lock:
                    self._requests += 1
                    self._bytes += r.num_bytes_downloaded
        if start is None and got > limit:
            raise ModelFactsError(f"{url}: larger than {limit:,} bytes; not a config or index file")
        return b"".join(chunks)[:limit]

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """huggingface_hub's and the transport's errors as one line each."""
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RemoteEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        where = f"the Hub at {self.endpoint}"
        try:
            yield
        except GatedRepoError as exc:
            raise ConfigError(
                f"{self.repo} is gated: its files need a token from an account that accepted its terms",
                hint="accept them on the model's page, then set HF_TOKEN (or `hf auth login`)",
            ) from exc
        except RepositoryNotFoundError as exc:
            raise ModelNotFoundError(
                f"{self.repo}: no such model on {where}",
                hint="check the repo id; a private repo needs HF_TOKEN",
            ) from exc
        except RevisionNotFoundError as exc:
            raise ModelNotFoundError(
                f"{self.repo} has no revision {self.revision!r} on {where}",
                hint="give a branch, tag or commit that exists; the default is main",
            ) from exc
        except RemoteEntryNotFoundError as exc:
            raise ModelFactsError(f"{self.repo}: a file it lists is missing on {where}: {exc}") from exc
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "an error"
            raise AirlockError(
                f"{where} answered {status} for {self.repo}",
                hint="it may be down: try again later, or plan a local copy with --offline",
            ) from exc
        except _transport_errors(self.session) as exc:
            raise AirlockError(
                f"{where} cannot be reached: {exc or type(exc).__name__}",
                hint="check the network, HF_ENDPOINT or a proxy; or plan a local copy with --offline",
            ) from exc


def _transport_errors(session: object) -> tuple[type[BaseException], ...]:
    """A connection's failures: OSError, and the TransportError of the HTTP library huggingface_hub's
    session comes from (httpx or its successor, by version), looked up rather than imported by name."""
    module = sys.modules.get(type(session).__module__.split(".")[0])
    transport = getattr(module, "TransportError", None)
    if isinstance(transport, type) and issubclass(transport, BaseException):
        return (OSError, transport)
    return (OSError,)


def _fetch(client: _Client, commit: str, files: list[HubFile], options: HubOptions) -> HubFactsRecord:
    """Everything plan needs at ``commit``: the small files, then each shard's (or the GGUF's) header."""
    by_path = {f.path: f for f in files}
    texts: dict[str, str] = {}
    for name in SMALL_FILES:
        if name in by_path:
            raw = client.get(client.file_url(commit, name), limit=SMALL_FILE_LIMIT)
            texts[name] = raw.decode("utf-8", errors="replace")
    record = HubFactsRecord(
        repo=client.repo, commit=commit, endpoint=client.endpoint,
        files=[_CachedFile(path=f.path, size=f.size, sha256=f.sha256) for f in files], texts=texts, headers={},
    )  # fmt: skip
    label = Path(f"{client.repo}@{commit[:12]}")
    gguf = _gguf_choice(record, label, options.gguf)
    if gguf is not None:
        fetch = _ranged(client, client.file_url(commit, gguf))
        f = PrefixFile(by_path[gguf].size, fetch, name=str(label / gguf), first=256 * 1024, double=True)
        g = read_gguf_header(f)
        prefix = f.prefix[: max(g.data_start, 8)]
        return record.model_copy(update={"gguf": gguf, "headers": {gguf: _b64(prefix)}})
    shards = _shards(record, label)

    def header(name: str) -> tuple[str, bytes]:
        fetch = _ranged(client, client.file_url(commit, name))
        f = PrefixFile(by_path[name].size, fetch, name=str(label / name), first=HEADER_PROBE)
        _, length = read_safetensors_header(f)
        return name, f.prefix[:length]

    with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        headers = dict(pool.map(header, shards))
    return record.model_copy(update={"headers": {k: _b64(v) for k, v in headers.items()}})


def _ranged(client: _Client, url: str) -> Callable[[int, int], bytes]:
    return lambda start, end: client.get(url, limit=end - start + 1, start=start)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- facts from a record -------------------------------------------------------------------------


def _model(
    record: HubFactsRecord, revision: str, read: HubRead, cache_file: Path, gguf: str | None
) -> HubModel:
    label = Path(f"{record.repo}@{record.commit[:12]}")
    files = tuple(HubFile(f.path, f.size, f.sha256) for f in record.files)
    sizes = {f.path: f.size for f in record.files}
    chosen = _gguf_choice(record, label, gguf)
    if chosen is not None:
        if chosen not in record.headers:
            raise ModelFactsError(f"{label}: {chosen} was not read; plan it again online")
        f = PrefixFile(
            sizes[chosen], None, name=str(label / chosen), prefix=base64.b64decode(record.headers[chosen])
        )
        facts = facts_from_gguf(read_gguf_header(f))
    else:
        facts = _safetensors_facts(record, label, sizes)
    return HubModel(
        repo=record.repo, revision=revision, commit=record.commit, endpoint=record.endpoint, files=files,
        facts=facts, read=read, cache_file=cache_file, gguf=chosen,
    )  # fmt: skip


def _safetensors_facts(record: HubFactsRecord, label: Path, sizes: dict[str, int]) -> ModelFacts:
    """Facts as ``read_facts`` gives them for a local copy: the same config parse and header sums."""
    config = json_object(record.texts["config.json"].encode(), label / "config.json")
    gen_text = record.texts.get("generation_config.json")
    gen = json_object(gen_text.encode(), label / "generation_config.json") if gen_text else {}
    headers: list[SafetensorsHeader] = []
    for name in _shards(record, label):
        if name not in record.headers:
            raise ModelFactsError(f"{label}: the header of {name} was not read; plan it again online")
        prefix = base64.b64decode(record.headers[name])
        f = PrefixFile(sizes[name], None, name=str(label / name), prefix=prefix)
        headers.append(read_safetensors_header(f)[0])
    return from_config(config, path=label, generation=gen, sizes=weight_sizes(headers))


def _shards(record: HubFactsRecord, label: Path) -> list[str]:
    """The safetensors shards, as a local read finds them: the index's, else every top-level file."""
    names = {f.path for f in record.files}
    if "config.json" not in record.texts:
        raise ModelFactsError(
            f"{label}: has no config.json",
            hint="plan reads a Hugging Face model (config.json with safetensors) or a GGUF file",
        )
    if SAFETENSORS_INDEX in record.texts:
        shards = index_shards(
            json_object(record.texts[SAFETENSORS_INDEX].encode(), label / SAFETENSORS_INDEX),
            label / SAFETENSORS_INDEX,
        )
        for name in shards:
            if name not in names:
                raise ModelFactsError(
                    f"{label / SAFETENSORS_INDEX}: lists {name}, which the repo does not hold"
                )
        return shards
    shards = sorted(n for n in names if n.endswith(".safetensors") and "/" not in n)
    if not shards:
        pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES) and "/" not in n)
        if pickles:
            raise ModelFactsError(
                f"{label}: has only pickle weights ({', '.join(pickles[:3])}{', ...' if len(pickles) > 3 else ''}), no safetensors",
                hint="airlock carries safetensors only (pickle runs code when loaded): pick a revision or a repo with safetensors",
            )
    return shards


def _gguf_choice(record: HubFactsRecord, label: Path, wanted: str | None) -> str | None:
    """The GGUF file to plan: the one asked for, or the only one of a repo without config.json; None
    for a safetensors repo."""
    ggufs = sorted(f.path for f in record.files if f.path.lower().endswith(".gguf"))
    if wanted is not None:
        if wanted not in ggufs:
            shown = ", ".join(ggufs[:5]) or "none"
            raise ModelFactsError(f"{label}: has no GGUF file {wanted!r} (it has: {shown})")
        return wanted
    if "config.json" in record.texts or not ggufs:
        return None
    if len(ggufs) > 1:
        shown = ", ".join(ggufs[:4]) + (f" and {len(ggufs) - 4} more" if len(ggufs) > 4 else "")
        raise ModelFactsError(
            f"{label}: holds only GGUF files ({shown})",
            hint="name one with --gguf FILE (llama.cpp serves GGUF; vLLM needs config.json and safetensors)",
        )
    return ggufs[0]
