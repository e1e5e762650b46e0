"""A small Hugging Face Hub on loopback, for tests: the endpoints ``huggingface_hub`` calls to download.

Implements what ``snapshot_download`` and ``hf_hub_download`` use (checked against huggingface_hub
2.x and 0.2x): ``GET /api/models/{repo}/revision/{rev}`` (the commit a branch or tag points at),
``GET /api/models/{repo}/tree/{rev}`` (the recursive file listing, with LFS SHA-256s), and
``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` (the SHA-256 for LFS
files, the git blob id for others) and ``Range`` (``bytes=a-b``, ``bytes=a-``: 206 with
``Content-Range``; a range past the end: 416). ``?blobs=true`` on the revision route adds each file's
size and LFS SHA-256, as the Hub's does. Unknown repos and revisions answer 404 with the Hub's
``X-Error-Code``; a gated repo's files answer 401 ``GatedRepo`` to a request without a token;
``failing`` makes every request a 503 (a Hub that is down). ``requests`` lists what was asked,
``ranges`` each Range header, and ``bytes_served`` counts the body bytes sent, so tests can tell cache
hits from downloads and assert that no weight byte was read. A ``SparseFile`` stands for a large shard
(its header, then zeros) without holding it in memory; only ranges of it are served.

Example::

    hub = FakeHub()
    commit = hub.add_repo("org/tiny", {"config.json": b"{}", "model.safetensors": data})
    with hub.serve() as url:
        snapshot_download("org/tiny", endpoint=url, cache_dir=tmp)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".onnx")


SPARSE_READ_LIMIT = 16 * 1024 * 1024  # a longer read of a SparseFile is refused (500): a test read weights


@dataclass(frozen=True)
class SparseFile:
    """A file of ``size`` bytes that is ``head`` followed by zeros (a shard's header on its real size).

    Its ids are derived from ``head`` and ``size``, not its content: pack would refuse it, plan reads it.
    """

    head: bytes
    size: int

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` inclusive."""
        if end - start + 1 > SPARSE_READ_LIMIT:
            raise ValueError(f"a read of {end - start + 1} bytes of a sparse file")
        part = self.head[start : end + 1]
        return part + bytes(end + 1 - start - len(part))


Content = bytes | SparseFile


def _size(data: Content) -> int:
    return len(data) if isinstance(data, bytes) else data.size


def git_blob_id(data: Content) -> str:
    if isinstance(data, SparseFile):
        return hashlib.sha1(b"sparse %d\x00" % data.size + data.head, usedforsecurity=False).hexdigest()
    return hashlib.sha1(b"blob %d\x00" % len(data) + data, usedforsecurity=False).hexdigest()


def _sha256(data: Content) -> str:
    if isinstance(data, SparseFile):
        return hashlib.sha256(b"sparse %d\x00" % data.size + data.head).hexdigest()
    return hashlib.sha256(data).hexdigest()


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, Content]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[tuple[str, str]] = []  # (path, Range header) of each ranged request
        self.corrupt: set[str] = set()  # paths served with one byte flipped (a damaged download)
        self.gated: set[str] = set()  # repos whose files need a token (an Authorization header)
        self.failing = False  # every request answers 503, as a Hub that is down
        self.bytes_served = 0  # body bytes sent, over all requests
        self._lock = threading.Lock()

    def count(self, n: int) -> None:
        with self._lock:
            self.bytes_served += n

    def add_repo(self, repo: str, files: Mapping[str, Content], *, ref: str = "main") -> str:
        """Add a commit holding ``files`` and point ``ref`` at it; return the commit id."""
        digest = hashlib.sha1(
            json.dumps(sorted((p, git_blob_id(d)) for p, d in files.items())).encode(), usedforsecurity=False
        )
        commit = digest.hexdigest()
        entry = self.repos.setdefault(repo, FakeRepo())
        entry.commits[commit] = dict(files)
        entry.refs[ref] = commit
        return commit

    def resolve(self, repo: str, rev: str) -> tuple[str, dict[str, Content]] | None:
        entry = self.repos.get(repo)
        if entry is None:
            return None
        commit = entry.refs.get(rev, rev)
        files = entry.commits.get(commit)
        return (commit, files) if files is not None else None

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        hub = self

        class Handler(_Handler):
            fake = hub

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # poll often: shutdown() waits for the loop's next poll (0.5 s by default, per test)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


def _tree_entry(path: str, data: Content) -> dict[str, object]:
    entry: dict[str, object] = {"type": "file", "oid": git_blob_id(data), "size": _size(data), "path": path}
    if path.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"oid": _sha256(data), "size": _size(data), "pointerSize": 134}
    return entry


def _sibling(path: str, data: Content, blobs: bool) -> dict[str, object]:
    """One file of the revision listing; with ``blobs``, its size, blob id and LFS facts (model_info's files_metadata)."""
    if not blobs:
        return {"rfilename": path}
    entry: dict[str, object] = {"rfilename": path, "size": _size(data), "blobId": git_blob_id(data)}
    if path.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"sha256": _sha256(data), "size": _size(data), "pointerSize": 134}
    return entry


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, head: bool = False
    ) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        length = headers.pop("Content-Length", str(len(body)))  # a HEAD names the length it would send
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", length)
        self.end_headers()
        if not head:
            self.wfile.write(body)
            self.fake.count(len(body))

    def _json(self, value: object) -> None:
        self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def _not_found(self, code: str, head: bool = False) -> None:
        self._send(
            404,
            json.dumps({"error": code}).encode(),
            {"X-Error-Code": code, "X-Error-Message": code},
            head=head,
        )

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, *, head: bool) -> None:
        url = urlparse(self.path)
        path = url.path
        self.fake.requests.append((self.command, path))
        if self.headers.get("Range"):
            self.fake.ranges.append((path, self.headers["Range"]))
        if self.fake.failing:
            return self._send(503, b"Service Unavailable", head=head)
        m = re.match(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)?)/revision/(?P<rev>.+)$", path)
        if m:
            return self._revision(m["repo"], unquote(m["rev"]), blobs="blobs=true" in url.query)
        m = re.match(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$", path)
        if m:
            return self._tree(m["repo"], unquote(m["rev"]), unquote(m["sub"] or ""))
        m = re.match(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", path)
        if m:
            return self._resolve(m["repo"], unquote(m["rev"]), unquote(m["file"]), head=head)
        return self._not_found("EntryNotFound", head)

    def _revision(self, repo: str, rev: str, *, blobs: bool = False) -> None:
        if repo not in self.fake.repos:
            return self._not_found("RepoNotFound")
        found = self.fake.resolve(repo, rev)
        if found is None:
            return self._not_found("RevisionNotFound")
        commit, files = found
        self._json(
            {
                "id": repo,
                "modelId": repo,
                "sha": commit,
                "private": False,
                "gated": "auto" if repo in self.fake.gated else False,
                "siblings": [_sibling(p, files[p], blobs) for p in sorted(files)],
            }
        )

    def _tree(self, repo: str, rev: str, sub: str) -> None:
        if repo not in self.fake.repos:
            return self._not_found("RepoNotFound")
        found = self.fake.resolve(repo, rev)
        if found is None:
            return self._not_found("RevisionNotFound")
        _, files = found
        entries: list[dict[str, object]] = []
        dirs: set[str] = set()
        for p, data in sorted(files.items()):
            if sub and not p.startswith(sub + "/"):
                continue
            parts = p.split("/")
            for i in range(1, len(parts)):
                dirs.add("/".join(parts[:i]))
            entries.append(_tree_entry(p, data))
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(dirs)]
        self._json(entries)

    def _resolve(self, repo: str, rev: str, file: str, *, head: bool) -> None:
        if repo not in self.fake.repos:
            return self._not_found("RepoNotFound", head)
        found = self.fake.resolve(repo, rev)
        if found is None:
            return self._not_found("RevisionNotFound", head)
        commit, files = found
        if file not in files:
            self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, head=head)
            return
        if repo in self.fake.gated and not self.headers.get("Authorization"):
            message = (
                f"Access to model {repo} is restricted. You must have access to it and be authenticated."
            )
            self._send(401, b"", {"X-Error-Code": "GatedRepo", "X-Error-Message": message}, head=head)
            return
        data = files[file]
        size = _size(data)
        etag = _sha256(data) if file.endswith(LFS_SUFFIXES) else git_blob_id(data)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if file.endswith(LFS_SUFFIXES):
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(size)
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and (m := re.match(r"bytes=(\d+)-(\d*)$", rng.strip())):
            start = int(m[1])
            end = min(int(m[2]), size - 1) if m[2] else size - 1
            if start >= size or end < start:
                headers["Content-Range"] = f"bytes */{size}"
                return self._send(416, b"", headers, head=head)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            status = 206
        if head:
            return self._send(status, b"", {**headers, "Content-Length": str(end + 1 - start)}, head=True)
        if isinstance(data, SparseFile):
            try:
                body = data.read(start, end)
            except ValueError as exc:
                return self._send(500, str(exc).encode())
        else:
            if file in self.fake.corrupt and data:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            body = data[start : end + 1]
        self._send(status, body, headers)
