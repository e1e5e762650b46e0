"""Faults under the gateway's state: the key database locked, deleted or damaged, the audit disk full,
and a gateway killed with requests in flight. Each answer the client sees is asserted, and so is the
audit line of every request (the chain verifies afterwards)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from airlock.gateway import leases
from airlock.gateway.apikeys import KeyLimits, KeyStore
from airlock.gateway.audit import AuditLog
from airlock.gateway.audit_verify import verify
from airlock.gateway.auth import KeyCache
from airlock.gateway.state import SqliteState
from airlock.spec import GatewaySpec
from gateway_procs import CHAT, chat, hang_open, start_gateways, stop
from harness import GatewayThread, fake_engine_config

BUSY_S = 0.2  # the gateway's busy timeout in these tests


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def audit_lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def quick_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    async def quick(target: Path) -> SqliteState:
        return SqliteState(Path(target), busy_timeout_s=BUSY_S)

    monkeypatch.setattr("airlock.gateway.auth.open_state", quick)


@pytest.fixture
def setup(tmp_path: Path, quick_busy: None) -> Iterator[tuple[GatewayThread, KeyStore, dict[str, str]]]:
    store = KeyStore(tmp_path / "keys.db")
    _, limited = store.create("limited", limits=KeyLimits(rpm=1000, concurrency=50))
    _, free = store.create("free")
    spec = GatewaySpec(audit_log=tmp_path / "audit" / "audit.jsonl", audit_flush_ms=10)
    thread = GatewayThread(
        [fake_engine_config("tiny")], tmp_path / "logs", gateway=spec, keys=KeyCache(store)
    )
    with thread:
        yield thread, store, {"limited": limited, "free": free}


def post(gw: GatewayThread, token: str) -> httpx.Response:
    return httpx.post(gw.url + CHAT, json=chat(), headers={"Authorization": f"Bearer {token}"}, timeout=30)


def assert_key_store_503(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "key_store_unavailable"
    assert "key database" in error["message"]
    assert r.headers["retry-after"] == "1"


def audited(path: Path, request_ids: list[str]) -> dict[str, int]:
    """request id -> status, for the given ids, once every one is in the log."""
    wanted = set(request_ids)

    def found() -> dict[str, int]:
        return {
            str(x["request_id"]): int(x["status"])  # type: ignore[call-overload]
            for x in audit_lines(path)
            if x.get("request_id") in wanted
        }

    wait_for("requests missing from the audit log", lambda: len(found()) == len(wanted))
    return found()


# -- the key database ----------------------------------------------------------------------------------


def test_a_locked_key_database_is_a_clear_503_audited_and_recovers(
    tmp_path: Path, setup: tuple[GatewayThread, KeyStore, dict[str, str]]
) -> None:
    gw, _store, tokens = setup
    assert post(gw, tokens["limited"]).status_code == 200
    blocker = sqlite3.connect(tmp_path / "keys.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock past the busy timeout
    refused = post(gw, tokens["limited"])
    assert_key_store_503(refused)
    assert post(gw, tokens["free"]).status_code == 200  # readers never wait in WAL: no limits, no lock
    blocker.execute("ROLLBACK")
    assert post(gw, tokens["limited"]).status_code == 200  # by itself, once the lock is gone
    blocker.close()
    assert audited(tmp_path / "audit" / "audit.jsonl", [refused.headers["x-request-id"]]) == {
        refused.headers["x-request-id"]: 503
    }


def test_a_deleted_key_database_is_a_503_until_it_is_restored(
    tmp_path: Path, setup: tuple[GatewayThread, KeyStore, dict[str, str]]
) -> None:
    gw, _store, tokens = setup
    db = tmp_path / "keys.db"
    assert post(gw, tokens["limited"]).status_code == 200
    backup = tmp_path / "backup.db"
    with sqlite3.connect(db) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    for path in (db, db.with_name("keys.db-wal"), db.with_name("keys.db-shm")):
        path.unlink(missing_ok=True)
    refused: list[httpx.Response] = []

    def is_refused(token: str) -> bool:
        refused.append(post(gw, token))
        return refused[-1].status_code == 503

    for token in (tokens["free"], tokens["limited"]):
        wait_for("the deletion was not noticed", lambda t=token: is_refused(t))  # type: ignore[misc]
        assert_key_store_503(refused[-1])
    assert not db.exists()  # the gateway never makes an empty key database in its place
    shutil.copy(backup, db)  # the operator restores it
    wait_for("no recovery", lambda: post(gw, tokens["free"]).status_code == 200)
    assert post(gw, tokens["limited"]).status_code == 200
    ids = [r.headers["x-request-id"] for r in refused if r.status_code == 503]
    assert set(audited(tmp_path / "audit" / "audit.jsonl", ids).values()) == {503}


def test_a_damaged_key_database_is_a_503(
    tmp_path: Path, setup: tuple[GatewayThread, KeyStore, dict[str, str]]
) -> None:
    gw, _store, tokens = setup
    db = tmp_path / "keys.db"
    assert post(gw, tokens["limited"]).status_code == 200
    for path in (db.with_name("keys.db-wal"), db.with_name("keys.db-shm")):
        path.unlink(missing_ok=True)
    damaged = db.with_name("damaged.db")
    damaged.write_bytes(b"this is not a database" * 100)
    damaged.replace(db)
    wait_for("the damage was not noticed", lambda: post(gw, tokens["limited"]).status_code == 503)
    assert_key_store_503(post(gw, tokens["free"]))


# -- leases: a gateway killed with requests in flight ----------------------------------------------------


def test_a_dead_owners_leases_are_freed_once(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("k", limits=KeyLimits(concurrency=5))
    conn = sqlite3.connect(tmp_path / "keys.db", isolation_level=None)
    now = time.time()
    # a process of this host that is gone (pid 2**22 + 1 is above Linux's pid_max), and one elsewhere
    # whose heartbeat stopped; each holds leases counted in key_state
    me = leases.Owner.me()
    conn.execute(leases.REGISTER, ("dead", me.host, 2**22 + 1, 1, now))
    conn.execute(leases.REGISTER, ("silent", "elsewhere", 1, 1, now - leases.LEASE_TTL_S - 1))
    conn.execute(leases.REGISTER, ("alive", "elsewhere", 1, 1, now))
    # the same host name in another PID namespace (a container with host networking): its pid means
    # nothing in our /proc, so only its heartbeat counts, and that is fresh
    assert me.host.endswith("/" + os.readlink("/proc/self/ns/pid"))
    container = f"{socket.gethostname()}/{me.host.split('/')[1]}/pid:[1]"
    conn.execute(leases.REGISTER, ("container", container, 2**22 + 1, 1, now))
    for owner, n in (("dead", 2), ("silent", 1), ("alive", 1), ("container", 1)):
        conn.execute(leases.SET_LEASE, (owner, key.key_id, n))
    conn.execute("UPDATE key_state SET in_flight = 5 WHERE key_id = ?", (key.key_id,))
    conn.execute("BEGIN IMMEDIATE")
    assert leases.reap(conn, me, now) == 2
    conn.execute("COMMIT")
    assert conn.execute("SELECT in_flight FROM key_state WHERE key_id = ?", (key.key_id,)).fetchone() == (2,)
    assert sorted(r[0] for r in conn.execute("SELECT owner FROM key_leases")) == ["alive", "container"]
    assert leases.reap(conn, me, now) == 0  # freed once


def test_slots_of_a_gateway_killed_mid_request_are_freed_by_the_other(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    store = KeyStore(db)
    procs, urls = start_gateways(str(db), 2, tmp_path)
    held: list[socket.socket] = []
    try:
        key, token = store.create("conc2", limits=KeyLimits(concurrency=2))
        held = [hang_open(urls[0], token) for _ in range(2)]
        refused = httpx.post(urls[1] + CHAT, json=chat(), headers={"Authorization": f"Bearer {token}"})
        assert (refused.status_code, refused.json()["error"]["param"]) == (429, "concurrency")
        procs[1].send_signal(signal.SIGKILL)  # procs[0] is the engine: this is the first gateway
        procs[1].wait(10)

        def in_flight() -> int:
            with sqlite3.connect(db) as conn:
                return int(conn.execute("SELECT in_flight FROM key_state WHERE key_id = ?", (key.key_id,)).fetchone()[0])  # fmt: skip

        wait_for("the dead gateway's slots were not freed", lambda: in_flight() == 0)
        answers = [
            httpx.post(urls[1] + CHAT, json=chat(), headers={"Authorization": f"Bearer {token}"}).status_code
            for _ in range(3)
        ]
        assert answers == [200, 200, 200]
    finally:
        for sock in held:
            sock.close()
        stop([p for p in procs if p.poll() is None])


# -- the audit disk full ----------------------------------------------------------------------------------


class FullDisk:
    """os.write for the audit log on a disk that fills up: the first write after ``fill()`` lands
    half its bytes (a partial line), the next ones fail with ENOSPC, until ``free()``."""

    def __init__(self) -> None:
        self.full = False
        self.partial_done = False
        self.refused = 0

    def fill(self) -> None:
        self.full, self.partial_done = True, False

    def free(self) -> None:
        self.full = False

    def __call__(self, fd: int, data: bytes) -> int:
        if not self.full:
            return os.write(fd, data)
        if not self.partial_done and len(data) > 1:
            self.partial_done = True
            return os.write(fd, data[: len(data) // 2])
        self.refused += 1
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_audit_disk_closes_the_gateway_and_no_line_is_lost_or_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk()
    monkeypatch.setattr(AuditLog, "write", staticmethod(disk))
    store = KeyStore(tmp_path / "keys.db")
    _, token = store.create("alice")
    log = tmp_path / "audit" / "audit.jsonl"
    spec = GatewaySpec(audit_log=log, audit_flush_ms=10)
    headers = {"Authorization": f"Bearer {token}"}
    ids: list[str] = []
    thread = GatewayThread(
        [fake_engine_config("tiny")], tmp_path / "logs", gateway=spec, keys=KeyCache(store)
    )
    with thread as gw, httpx.Client(base_url=gw.url, headers=headers, timeout=30) as http:
        assert http.post(CHAT, json=chat()).status_code == 200
        wait_for("the first line was not written", lambda: b'"request"' in log.read_bytes())
        disk.fill()
        assert http.post(CHAT, json=chat()).status_code == 200  # served: its line waits in memory
        wait_for("the full disk was not noticed", lambda: http.get("/ready").status_code == 503)
        assert "No space left on device" in http.get("/ready").json()["audit"]
        refused = http.post(CHAT, json=chat())
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["code"] == "audit_unavailable" and refused.headers["retry-after"] == "5"
        ids.append(refused.headers["x-request-id"])
        assert log.read_bytes().endswith(b"\n")  # the partial line was cut off again
        wait_for("the writer did not try again", lambda: disk.refused > 1)
        disk.free()
        wait_for("the gateway did not recover", lambda: http.get("/ready").status_code == 200)
        assert http.post(CHAT, json=chat()).status_code == 200
        assert audited(log, ids) == {ids[0]: 503}
    chats = [x["status"] for x in audit_lines(log) if x.get("route") == CHAT]
    assert chats == [200, 200, 503, 200]  # every request, the refused one too, in order
    assert verify([log]).ok  # one file, whole lines, the chain unbroken
    assert not list(log.parent.glob("*.tmp*"))


FULL_TMPFS = """
import sys, time
from pathlib import Path
import httpx
sys.path.insert(0, sys.argv[2])
from airlock.gateway.apikeys import KeyStore
from airlock.gateway.audit_verify import verify
from airlock.gateway.auth import KeyCache
from airlock.spec import GatewaySpec
from harness import GatewayThread, fake_engine_config

disk, work = Path(sys.argv[1]), Path(sys.argv[3])
store = KeyStore(work / "keys.db")
_, token = store.create("alice")
log = disk / "audit.jsonl"
spec = GatewaySpec(audit_log=log, audit_flush_ms=10)
seen = []

def wait(check):
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.02)

body = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 200}], "max_tokens": 3}
with GatewayThread([fake_engine_config("tiny")], work / "logs", gateway=spec, keys=KeyCache(store)) as gw:
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        seen.append(http.post("/v1/chat/completions", json=body).status_code)
        wait(lambda: b'"request"' in log.read_bytes())
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as out:  # fill the disk to the last byte
            try:
                while True:
                    out.write(b"x" * 512)
            except OSError:
                pass
        for _ in range(200):  # requests until the writer finds no room
            r = http.post("/v1/chat/completions", json=body)
            seen.append(r.status_code)
            if r.status_code == 503:
                break
        seen.append(http.get("/ready").json()["audit"])
        filler.unlink()
        wait(lambda: http.get("/ready").status_code == 200)
        seen.append(http.post("/v1/chat/completions", json=body).status_code)
report = verify([log])
print("RESULT", seen[0], sorted(set(seen[1:-2])), repr(seen[-2]), seen[-1], report.ok,
      log.read_bytes().endswith(b"\\n"), flush=True)
"""


def test_a_real_full_tmpfs_under_the_audit_log(tmp_path: Path) -> None:
    """The same on a real 64 KiB tmpfs (in a mount namespace of its own): ENOSPC from the kernel."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare (a tmpfs in a mount namespace of its own)")
    disk = tmp_path / "disk"
    disk.mkdir()
    import subprocess
    import sys

    script = tmp_path / "full.py"
    script.write_text(FULL_TMPFS)
    tests = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c",
         f'mount -t tmpfs -o size=64k tmpfs "{disk}" && exec "{sys.executable}" "{script}" "{disk}" "{tests}" "{tmp_path}"'],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, out.stderr[-3000:]
    first, _, rest = line.removeprefix("RESULT ").partition(" ")
    assert first == "200"
    assert "[200, 503]" in rest or "[503]" in rest  # served until the writer found no room, then 503
    assert "No space left on device" in rest
    assert rest.endswith("200 True True")  # served again; the chain verifies; the file ends on a whole line
