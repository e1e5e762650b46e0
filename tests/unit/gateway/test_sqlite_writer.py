"""SQLite's batches (``gateway/sqlite_writer.py``): a key's consecutive admissions and settlements
are written as one statement each, and the database ends exactly as if every op had been written
on its own, in order: the same admissions admitted, the same counters, the same leases."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

from airlock.gateway.apikeys import KeyLimits, KeyStore
from airlock.gateway.leases import Owner
from airlock.gateway.sqlite_writer import ADMIT, SETTLE, Ledger, Op, connect, fold_deltas
from airlock.gateway.state import FILL_STATE, admit_sql, prepare_sqlite, sqlite_ledger

MINUTE = 29_000_000
DAY = MINUTE // 1440
FIRST_OF_A_DAY = (DAY + 1) * 1440


def test_folded_deltas_clamp_at_zero_as_one_by_one() -> None:
    rnd = random.Random(7)
    for _ in range(3000):
        deltas = [rnd.randint(-60, 40) for _ in range(rnd.randint(1, 8))]
        start = rnd.randint(0, 120)
        one_by_one = start
        for delta in deltas:
            one_by_one = max(0, one_by_one + delta)
        total, floor = fold_deltas(deltas)
        assert max(floor, start + total) == one_by_one, (start, deltas)


def _database(path: Path, limits: dict[str, KeyLimits]) -> tuple[sqlite3.Connection, dict[str, str]]:
    store = KeyStore(path)
    ids = {name: store.create(name, limits=value)[0].key_id for name, value in limits.items()}
    conn = connect(path, 0.0, create=False)
    prepare_sqlite(conn)
    conn.execute(FILL_STATE)
    return conn, ids


def _admission(key_id: str, limits: KeyLimits, tokens: int, minute: int, tag: object) -> Op:
    checks = tuple((name, value) for name, value in vars(limits).items() if value is not None)
    sql = admit_sql([name for name, _ in checks])
    return (ADMIT, sql, key_id, checks, tokens, minute, minute // 1440, tag)


def _rows(conn: sqlite3.Connection) -> list[Any]:
    state = conn.execute("SELECT * FROM key_state ORDER BY key_id").fetchall()
    leases = conn.execute("SELECT owner, key_id, n FROM key_leases ORDER BY owner, key_id").fetchall()
    return [state, leases]


def _admitted(results: list[Any]) -> dict[object, bool]:
    return {future: value is not None for future, value, error, _ in results if error is None}


def test_a_batch_ends_as_its_ops_one_by_one(tmp_path: Path) -> None:
    """Random batches (two keys, admissions that fit and that do not, settlements that give back
    and that take more, of this minute and of the last, of this day and of the last, a minute that
    turns, counters below what the settlements give back, a settlement of a database replaced
    since) against the same ops written one at a time."""
    rnd = random.Random(11)
    owner = Owner.me()
    for trial in range(120):
        limits = {
            name: KeyLimits(
                rpm=rnd.choice([None, rnd.randint(1, 12)]),
                tpm=rnd.choice([None, rnd.randint(40, 400)]),
                tpd=rnd.choice([None, rnd.randint(100, 900)]),
                concurrency=rnd.choice([None, rnd.randint(1, 8)]) or 20,
            )
            for name in ("a", "b")
        }
        conn, ids = _database(tmp_path / f"{trial}.db", limits)
        ledger = sqlite_ledger(tmp_path / f"{trial}.db", owner)
        now = rnd.choice([MINUTE, FIRST_OF_A_DAY])
        held: list[tuple[str, int, int]] = []  # (key, tokens, minute) of admitted requests
        for i in range(rnd.randint(0, 12)):  # requests in flight before the batch
            name = rnd.choice("ab")
            tokens = rnd.randint(0, 40)
            minute = now - 1 if i < 4 and rnd.random() < 0.5 else now
            results = ledger.run(conn, [_admission(ids[name], limits[name], tokens, minute, i)])
            if _admitted(results)[i]:
                held.append((name, tokens, minute))
        if rnd.random() < 0.3:  # counters lower than the settlements give back: the clamp at zero
            conn.execute(
                "UPDATE key_state SET minute_tokens = minute_tokens / 3, day_tokens = day_tokens / 5"
            )
        batch: list[Op] = []
        rnd.shuffle(held)
        for n in range(rnd.randint(1, 24)):
            if held and rnd.random() < 0.4:
                name, tokens, minute = held.pop()
                delta = rnd.randint(-tokens, 30)
                batch.append((SETTLE, ids[name], delta, minute, minute // 1440, ledger.epoch))
            else:
                name = rnd.choice("ab")
                minute = now + (1 if n > 12 and rnd.random() < 0.3 else 0)
                batch.append(_admission(ids[name], limits[name], rnd.randint(0, 60), minute, ("new", n)))
            if rnd.random() < 0.05:
                batch.append((SETTLE, ids["a"], -5, MINUTE, DAY, ledger.epoch - 1))  # not this file's
        conn.commit()
        twin_path = tmp_path / f"{trial}-twin.db"
        twin = connect(twin_path, 0.0, create=True)
        conn.backup(twin)
        other = sqlite_ledger(twin_path, owner)
        other.epoch, other.leases = ledger.epoch, dict(ledger.leases)

        together = _admitted(ledger.run(conn, batch))
        alone: dict[object, bool] = {}
        for op in batch:
            alone.update(_admitted(other.run(twin, [op])))

        assert together == alone, trial
        assert _rows(conn) == _rows(twin), trial
        assert ledger.leases == other.leases, trial
        conn.close()
        twin.close()


def _counting(conn: sqlite3.Connection) -> list[str]:
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    return statements


def test_admissions_of_one_key_are_one_statement_and_one_by_one_when_they_do_not_all_fit(
    tmp_path: Path,
) -> None:
    limits = KeyLimits(rpm=12, concurrency=10)
    conn, ids = _database(tmp_path / "keys.db", {"k": limits})
    ledger: Ledger = sqlite_ledger(tmp_path / "keys.db")
    statements = _counting(conn)

    results = ledger.run(conn, [_admission(ids["k"], limits, 5, MINUTE, i) for i in range(6)])
    assert _admitted(results) == dict.fromkeys(range(6), True)
    assert sum(s.startswith("UPDATE key_state") for s in statements) == 1

    statements.clear()  # 6 more: 4 fit the concurrency of 10, the first 4 as they came
    results = ledger.run(conn, [_admission(ids["k"], limits, 5, MINUTE, i) for i in range(6, 12)])
    assert _admitted(results) == {6: True, 7: True, 8: True, 9: True, 10: False, 11: False}
    assert sum(s.startswith("UPDATE key_state") for s in statements) == 1 + 6

    statements.clear()  # settlements of one key: one statement; the key's lease row follows
    settle = [(SETTLE, ids["k"], -5, MINUTE, DAY, ledger.epoch) for _ in range(7)]
    ledger.run(conn, settle)
    assert sum(s.startswith("UPDATE key_state") for s in statements) == 1
    row = conn.execute("SELECT minute_requests, minute_tokens, in_flight FROM key_state").fetchone()
    assert row == (10, 15, 3)
    assert conn.execute("SELECT n FROM key_leases").fetchone() == (3,)
    assert ledger.leases == {ids["k"]: 3}
