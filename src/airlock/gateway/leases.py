"""Who holds the requests in flight: each gateway process is an *owner* with a heartbeat, and its
requests in flight per key are written beside the key's counter in the same transaction.

Without this, a gateway killed with requests in flight (kill -9, a crash, the host lost) leaves its
slots counted in ``key_state.in_flight`` for ever, and a key with a concurrency limit is refused
until someone edits the database. With it, any gateway sharing the database frees them::

    gateway_owners  owner (random id), host, pid, the pid's start time, heartbeat (unix time)
    key_leases      owner, key_id, n: that owner's requests in flight for the key

An owner is dead when it runs on this host (same boot, same PID namespace) and its pid is gone (or
is another process now: the start time differs), or when its heartbeat is older than
:data:`LEASE_TTL_S` (a gateway on another host, or one whose database was unreachable that long). Reaping an owner deletes its row first
(``rowcount`` 1: this gateway won the race, so two gateways never subtract twice), then subtracts
its leases from ``key_state.in_flight`` and deletes them, all in one transaction.

A gateway that finds its own owner row gone (reaped while it could not heartbeat) registers again
with a new epoch: settlements of leases taken before are then skipped, since they were already
subtracted.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A heartbeat older than this frees the owner's leases (gateways heartbeat once a second).
LEASE_TTL_S = 30.0

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_owners (
    owner TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, started INTEGER NOT NULL,
    heartbeat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS key_leases (
    owner TEXT NOT NULL, key_id TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (owner, key_id)
);
"""
POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_owners (
    owner TEXT PRIMARY KEY, host TEXT NOT NULL, pid BIGINT NOT NULL, started BIGINT NOT NULL,
    heartbeat DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS key_leases (
    owner TEXT NOT NULL, key_id TEXT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (owner, key_id)
);
"""

REGISTER = "INSERT INTO gateway_owners(owner, host, pid, started, heartbeat) VALUES (?,?,?,?,?)"
HEARTBEAT = "UPDATE gateway_owners SET heartbeat = ? WHERE owner = ?"
OWNERS = "SELECT owner, host, pid, started, heartbeat FROM gateway_owners WHERE owner <> ?"
CLAIM = "DELETE FROM gateway_owners WHERE owner = ?"
SET_LEASE = (
    "INSERT INTO key_leases(owner, key_id, n) VALUES (?,?,?)"
    " ON CONFLICT (owner, key_id) DO UPDATE SET n = excluded.n"
)
DROP_LEASE = "DELETE FROM key_leases WHERE owner = ? AND key_id = ?"
_RELEASE = (
    "UPDATE key_state SET in_flight = {most}(0, in_flight -"
    " (SELECT n FROM key_leases WHERE key_leases.owner = ? AND key_leases.key_id = key_state.key_id))"
    " WHERE key_id IN (SELECT key_id FROM key_leases WHERE owner = ?)"
)
RELEASE_SQLITE = _RELEASE.format(most="MAX")
RELEASE_POSTGRES = _RELEASE.format(most="GREATEST")
FORGET = "DELETE FROM key_leases WHERE owner = ?"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        fields = open(f"/proc/{pid}/stat", "rb").read().rsplit(b")", 1)[1].split()  # noqa: SIM115
    except OSError:
        return None
    return int(fields[19])


@dataclass(frozen=True)
class Owner:
    """This gateway process as the database knows it."""

    owner: str
    host: str
    pid: int
    started: int

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        return cls(uuid.uuid4().hex, _process_space(), pid, _start_ticks(pid) or 0)

    def register_params(self, now: float) -> tuple[Any, ...]:
        return (self.owner, self.host, self.pid, self.started, now)


def _process_space() -> str:
    """Where a pid means one process: this host's name, boot and PID namespace. Two gateways with
    the same host name in other PID namespaces (containers with host networking) or on another boot
    are judged by their heartbeat only, never by a pid looked up in our own /proc."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass  # not Linux: the host name alone, as before
    return "/".join(parts)


def is_dead(row: tuple[Any, ...], host: str, now: float, ttl_s: float = LEASE_TTL_S) -> bool:
    """Whether the owner of a ``gateway_owners`` row (as :data:`OWNERS` reads it) is gone."""
    _, their_host, pid, started, heartbeat = row
    if their_host == host and (_start_ticks(int(pid)) or -1) != int(started):
        return True  # this host, and that pid is gone or is another process now
    return bool(now - float(heartbeat) > ttl_s)


def reap(conn: Any, me: Owner, now: float, *, postgres: bool = False) -> int:
    """Free the leases of every dead owner, inside the caller's transaction; returns how many owners.

    ``conn.execute`` takes ``?`` placeholders (sqlite3's, or :class:`airlock.gateway.state._PgConn`)."""
    rows = conn.execute(OWNERS, (me.owner,)).fetchall()
    freed = 0
    for row in rows:
        if not is_dead(tuple(row), me.host, now):
            continue
        owner = row[0]
        if conn.execute(CLAIM, (owner,)).rowcount != 1:
            continue  # another gateway reaped it first
        conn.execute(RELEASE_POSTGRES if postgres else RELEASE_SQLITE, (owner, owner))
        conn.execute(FORGET, (owner,))
        freed += 1
    return freed
