"""A small Hugging Face Hub on loopback, for tests: the endpoints ``huggingface_hub`` calls to download.

Implements what ``snapshot_download`` and ``hf_hub_download`` use (checked against huggingface_hub
2.x and 0.2x): ``GET /api/models/{repo}/revision/{rev}`` (the commit a branch or tag points at),
``GET /api/models/{repo}/tree/{rev}`` (the recursive file listing, with LFS SHA-256s), and
``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` (the SHA-256 for LFS
files, the git blob id for others) and ``Range``. Unknown repos and revisions answer 404 with the
Hub's ``X-Error-Code``. ``requests`` counts what was asked, so tests can tell cache hits from downloads.

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".onnx")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.corrupt: set[str] = set()  # paths served with one byte flipped (a damaged download)

    def add_repo(self, repo: str, files: dict[str, bytes], *, ref: str = "main") -> str:
        """Add a commit holding ``files`` and point ``ref`` at it; return the commit id."""
        digest = hashlib.sha1(
            json.dumps(sorted((p, git_blob_id(d)) for p, d in files.items())).encode(), usedforsecurity=False
        )
        commit = digest.hexdigest()
        entry = self.repos.setdefault(repo, FakeRepo())
        entry.commits[commit] = dict(files)
        entry.refs[ref] = commit
        return commit

    def resolve(self, repo: str, rev: str) -> tuple[str, dict[str, bytes]] | None:
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


def _tree_entry(path: str, data: bytes) -> dict[str, object]:
    entry: dict[str, object] = {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": path}
    if path.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
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
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

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
        m = re.match(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)?)/revision/(?P<rev>.+)$", path)
        if m:
            return self._revision(m["repo"], unquote(m["rev"]))
        m = re.match(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$", path)
        if m:
            return self._tree(m["repo"], unquote(m["rev"]), unquote(m["sub"] or ""))
        m = re.match(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", path)
        if m:
            return self._resolve(m["repo"], unquote(m["rev"]), unquote(m["file"]), head=head)
        return self._not_found("EntryNotFound", head)

    def _revision(self, repo: str, rev: str) -> None:
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
                "siblings": [{"rfilename": p} for p in sorted(files)],
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
        data = files[file]
        if file in self.fake.corrupt and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        etag = (
            hashlib.sha256(files[file]).hexdigest()
            if file.endswith(LFS_SUFFIXES)
            else git_blob_id(files[file])
        )
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if file.endswith(LFS_SUFFIXES):
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(len(data))
        status = 200
        rng = self.headers.get("Range")
        if rng and (m := re.match(r"bytes=(\d+)-(\d*)", rng)):
            start = int(m[1])
            end = int(m[2]) if m[2] else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start : end + 1]
            status = 206
        self._send(status, data, headers, head=head)
