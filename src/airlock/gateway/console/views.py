"""What each console view shows, as JSON-ready data: engines, models and who may use them, keys and
their usage, the audit log's last lines and its chain, and what the store holds. Functions that read
files or databases are plain (the console runs them in a thread)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from airlock.engines.process import log_tail
from airlock.errors import AirlockError
from airlock.gateway.apikeys import ApiKey, KeyStore, KeyUsage
from airlock.gateway.audit import ModelIdentity, rotated_files
from airlock.gateway.audit_verify import verify
from airlock.gateway.routing import Router

#: how much of the active audit file the audit view reads from its end
AUDIT_TAIL_BYTES = 4 * 1024 * 1024


def engines(
    router: Router, identities: Mapping[str, ModelIdentity], *, tail_lines: int = 20
) -> list[dict[str, Any]]:
    now = time.monotonic()
    out = []
    for rt in router.runtimes:
        config = rt.config
        identity = identities.get(config.name)
        out.append(
            {
                "name": config.name,
                "kind": config.kind,
                "version": config.version,
                "upstream_model": config.upstream_model,
                "state": rt.state.value,
                "uptime_s": round(now - rt.ready_since, 1) if rt.ready and rt.ready_since else None,
                "restarts": rt.restarts,
                "pid": rt.pid,
                "last_error": rt.last_error,
                "log_tail": log_tail(rt.log_path, tail_lines, start=rt.log_start) if rt.last_error else "",
                "digest": identity.digest if identity else None,
                "commit": identity.commit if identity else None,
                "bundle": identity.bundle if identity else None,
            }
        )
    return out


def models(router: Router, keys: Iterable[ApiKey]) -> list[dict[str, Any]]:
    """Each served model with its aliases and the active keys that may use it."""
    active = [
        k for k in keys if k.active and any(s in k.granted for s in ("chat", "completions", "embeddings"))
    ]
    aliases: dict[str, list[str]] = {}
    for name, canonical in router.names():
        if name != canonical:
            aliases.setdefault(canonical, []).append(name)
    out = []
    for rt in router.runtimes:
        name = rt.config.name
        out.append(
            {
                "name": name,
                "aliases": aliases.get(name, []),
                "kind": rt.config.kind,
                "ready": rt.ready,
                "keys": [k.name for k in active if k.allows(name)],
                "every_key": [k.name for k in active if k.models is None],
            }
        )
    return out


def key_row(key: ApiKey, usage: KeyUsage | None) -> dict[str, Any]:
    used = usage or KeyUsage()
    return {
        "name": key.name,
        "key_id": key.key_id,
        "scopes": list(key.granted),
        "models": list(key.models) if key.models is not None else None,
        "owner": key.owner,
        "team": key.team,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "limits": {n: v for n, v in vars(key.limits).items() if v is not None},
        "usage": {
            "requests_today": used.requests_today,
            "tokens_today": used.prompt_today + used.completion_today,
            "requests_total": used.requests_total,
            "tokens_total": used.prompt_total + used.completion_total,
            "last_used_at": used.last_used_at,
        },
    }


def keys(store: KeyStore) -> list[dict[str, Any]]:
    """Every key, active first (newest first), then revoked ones, with today's and all-time usage."""
    usage = store.usage()
    listed = store.list(include_revoked=True)
    listed.sort(key=lambda k: (k.revoked_at is not None, -k.created_at))
    return [key_row(k, usage.get(k.key_id)) for k in listed]


def _matches(line: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
    for field, wanted in filters.items():
        if not wanted:
            continue
        value = line.get(field)
        if field == "status":
            if not str(value).startswith(wanted):
                return False
        elif field == "text":
            if wanted.lower() not in orjson.dumps(line).decode().lower():
                return False
        elif str(value) != wanted:
            return False
    return True


def audit_tail(path: Path, filters: Mapping[str, str], limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` lines of the active audit file that match ``filters`` (event, key, model,
    action, status prefix, text), newest first; read from the end of the file."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            start = max(0, size - AUDIT_TAIL_BYTES)
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first one is cut
    found: list[dict[str, Any]] = []
    for raw in reversed(lines):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(line, dict) and _matches(line, filters):
            found.append(line)
            if len(found) >= limit:
                break
    return found


def audit_verify(path: Path) -> dict[str, Any]:
    """The chain over the active file and its rotated ones, as ``airlock audit verify`` checks it."""
    files = [*rotated_files(path), path] if path.exists() else rotated_files(path)
    if not files:
        return {"ok": True, "lines": 0, "files": 0, "problems": [], "notes": ["the log is empty"]}
    report = verify(files)
    return {
        "ok": report.ok,
        "lines": report.lines,
        "files": len(report.files),
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "head_checked": report.head_checked,
        "problems": [str(p) for p in report.problems[:20]],
        "more_problems": max(0, len(report.problems) - 20),
        "notes": report.notes,
        "checked_at": time.time(),
    }


def store_contents(root: Path | None) -> dict[str, Any]:
    """Models, images and bundles the store holds, with dates and signers."""
    if root is None:
        return {"store": None, "models": [], "images": [], "bundles": []}
    from airlock.store.store import Store

    db = Store(root).load_db()
    return {
        "store": str(root),
        "models": [
            {"name": m.name, "repo": m.repo, "revision": m.revision, "commit": m.commit,
             "source": m.source, "files": len(m.files), "size": sum(int(f.size) for f in m.files),
             "bundle": m.bundle, "installed": m.installed}
            for m in db.models
        ],
        "images": [
            {"reference": i.reference, "digest": i.digest, "platform": i.platform, "size": int(i.size),
             "bundle": i.bundle, "installed": i.installed, "targets": [t.reference for t in i.targets]}
            for i in db.images
        ],
        "bundles": [
            {"id": b.id, "created": b.created, "installed": b.installed, "signed_by": b.signed_by,
             "airlock_version": b.airlock_version}
            for b in db.bundles
        ],
    }  # fmt: skip


def store_digests(root: Path | None) -> dict[str, ModelIdentity]:
    """Each stored model's identity by its name in the spec it was packed from (the newest install),
    for engines the audit gave no identity (a gateway without an audit log)."""
    if root is None:
        return {}
    from airlock.gateway.audit import model_identities
    from airlock.store.store import Store

    try:
        db = Store(root).load_db()
    except (AirlockError, OSError):  # an unreadable or damaged store: the engines view shows no digest
        return {}
    newest: dict[str, Any] = {}
    for m in db.models:
        if m.name not in newest or m.installed > newest[m.name].installed:
            newest[m.name] = m
    return model_identities(newest.values())
