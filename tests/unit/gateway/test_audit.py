"""The hash-chained audit log: what verify names when it is tampered with, what a crash can lose,
rotation, pruning, several writers, and the SIEM formats."""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from airlock.gateway.audit import (
    GENESIS,
    AuditConfig,
    AuditLog,
    append_admin,
    head_path,
    json_stamp,
    rotated_files,
    seal,
    seal_batch,
    utc_now,
)
from airlock.gateway.audit_verify import export, to_cef, to_syslog, verify
from harness import Cli


def write_log(path: Path, lines: int, **config: object) -> list[Path]:
    """An audit log of ``lines`` request lines (plus its start and stop lines); its files, in order."""

    async def main() -> None:
        log = AuditLog(AuditConfig(path, **config))  # type: ignore[arg-type]
        await log.start()
        for i in range(lines):
            log.record({"event": "request", "i": i, "route": "/v1/chat/completions", "status": 200})
            if i % 10 == 9:
                log.flush()  # several batches
        await log.close()

    asyncio.run(main())
    return [*rotated_files(path), path]


async def until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - the writer's thread sets no event to wait on
        await asyncio.sleep(0.01)


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_a_whole_log_verifies(tmp_path: Path) -> None:
    files = write_log(tmp_path / "audit.jsonl", 25)
    report = verify(files)
    assert report.ok, report.problems
    assert (report.lines, report.first_seq, report.last_seq) == (27, 1, 27)
    assert report.head_checked
    first = orjson.loads(read_lines(files[-1])[0])
    assert first["event"] == "audit_start" and first["prev"] == "0" * 64


def test_an_edited_byte_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 10)
    data = bytearray(path.read_bytes())
    lines = read_lines(path)
    offset = sum(len(x) for x in lines[:4]) + lines[4].index(b'"status":200') + 10
    data[offset] = ord("4")  # status 200 -> 400 on line 5
    path.write_bytes(bytes(data))
    report = verify([path])
    assert not report.ok
    assert (report.problems[0].file, report.problems[0].line) == (path, 5)
    assert "edited" in report.problems[0].message


def test_an_edited_line_resealed_is_named_by_the_next_one(tmp_path: Path) -> None:
    # Whoever edits a line and recomputes its hash breaks the next line's prev.
    import hashlib

    path = tmp_path / "audit.jsonl"
    write_log(path, 10)
    lines = read_lines(path)
    body = orjson.loads(lines[3])
    del body["hash"]
    body["status"] = 500
    raw = orjson.dumps(body)
    lines[3] = raw[:-1] + b',"hash":"' + hashlib.sha256(raw).hexdigest().encode() + b'"}\n'
    path.write_bytes(b"".join(lines))
    report = verify([path])
    assert (report.problems[0].line, report.problems[0].message.split(":")[0]) == (
        5,
        "seq 5's prev is not the hash of seq 4",
    )


def test_a_removed_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 10)
    lines = read_lines(path)
    path.write_bytes(b"".join(lines[:6] + lines[7:]))
    report = verify([path])
    assert report.problems[0].line == 7
    assert "seq 8 follows seq 6: 1 line removed" in report.problems[0].message


def test_two_swapped_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 10)
    lines = read_lines(path)
    lines[3], lines[4] = lines[4], lines[3]
    path.write_bytes(b"".join(lines))
    report = verify([path])
    assert report.problems[0].line == 4
    assert "seq 5 follows seq 3" in report.problems[0].message
    assert any("seq 4 follows seq 5: lines reordered" in p.message for p in report.problems)


def test_a_cut_end_is_named_against_the_head_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 10)
    lines = read_lines(path)
    path.write_bytes(b"".join(lines[:-3]))  # whole lines: the chain alone cannot tell
    report = verify([path])
    assert not report.ok
    assert "ends at seq 9 but audit.jsonl.head records seq 12: 3 lines cut off the end" in str(
        report.problems[0]
    )


def test_a_line_cut_in_the_middle_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 10)
    path.write_bytes(path.read_bytes()[:-40])
    report = verify([path])
    assert report.problems[0].line == 12
    assert "incomplete line" in report.problems[0].message


def test_a_removed_rotated_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    files = write_log(path, 60, max_bytes=2000)
    assert len(files) >= 4
    assert verify(files).ok
    gone = files[1]
    report = verify([f for f in files if f != gone])
    assert not report.ok
    problem = report.problems[0]
    after = files[2]
    assert (problem.file, problem.line) == (after, 1)
    assert "removed" in problem.message and "rotated file" in problem.message


def test_the_oldest_file_removed_is_named_but_pruning_is_vouched_for(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    files = write_log(path, 60, max_bytes=2000)
    report = verify(files[1:])
    assert "the log starts at seq" in report.problems[0].message
    pruned = tmp_path / "pruned" / "audit.jsonl"
    kept = write_log(pruned, 60, max_bytes=2000, keep=2)
    assert len(rotated_files(pruned)) == 2
    report = verify(kept)
    assert report.ok, report.problems
    assert any("pruned" in note for note in report.notes)


def test_files_are_put_in_chain_order_whatever_order_they_are_given_in(tmp_path: Path) -> None:
    files = write_log(tmp_path / "audit.jsonl", 60, max_bytes=2000)
    assert verify(list(reversed(files))).ok


def test_a_restart_continues_the_chain_and_a_crash_cut_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    with path.open("ab") as fh:  # a crash mid-write left half a line
        fh.write(b'{"seq":13,"ts":"2026-')
    files = write_log(path, 5)
    report = verify(files)
    assert report.ok, report.problems
    assert any("a line cut by a crash (21 bytes)" in note for note in report.notes)
    assert report.last_seq == 7 + 8  # start, 5 lines and stop twice, and the recovery line


def test_two_writers_share_one_chain(tmp_path: Path) -> None:
    # Gateway workers (or an admin command) append to one log: under flock each continues the chain.
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        a = AuditLog(AuditConfig(path, max_bytes=3000))
        b = AuditLog(AuditConfig(path, max_bytes=3000))
        await a.start()
        await b.start()
        for i in range(40):
            (a if i % 3 else b).record({"event": "request", "i": i})
            if i % 4 == 0:
                a.flush()
                b.flush()
        await a.close()
        await b.close()

    asyncio.run(main())
    files = [*rotated_files(path), path]
    report = verify(files)
    assert report.ok, report.problems
    assert report.last_seq == 44


def test_admin_actions_from_another_process_join_the_gateways_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        log = AuditLog(AuditConfig(path))
        await log.start()
        log.record({"event": "request", "i": 1})
        log.flush()
        append_admin(AuditConfig(path), "key_create", key="bob", key_id="k2", by="root")
        log.record({"event": "request", "i": 2})
        await log.close()

    asyncio.run(main())
    report = verify([path])
    assert report.ok, report.problems
    events = [orjson.loads(x)["event"] for x in read_lines(path)]
    assert events == ["audit_start", "request", "admin", "request", "audit_stop"]
    admin = orjson.loads(read_lines(path)[2])
    assert (admin["action"], admin["key"], admin["key_id"]) == ("key_create", "bob", "k2")


def test_a_writer_held_back_makes_the_log_unhealthy_until_it_catches_up(tmp_path: Path) -> None:
    """The crash bound: past max_pending queued lines the log says it is unhealthy (the gateway then
    refuses requests), so no more than max_pending accepted lines are ever only in memory."""
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        log = AuditLog(AuditConfig(path, flush_ms=5, max_pending=20))
        await log.start()
        log.flush()
        lock = os.open(path.with_name("audit.jsonl.lock"), os.O_WRONLY)
        fcntl.flock(lock, fcntl.LOCK_EX)  # the disk stalls: the writer cannot take the lock
        for i in range(21):
            log.record({"event": "request", "i": i})
        assert not log.healthy
        assert "21 lines behind" in log.reason
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
        await until(lambda: log.healthy and log.durable_seq >= 22)
        await log.close()

    asyncio.run(main())
    assert verify([path]).ok


CRASH_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from airlock.gateway.audit import AuditConfig, AuditLog

    async def main():
        log = AuditLog(AuditConfig(Path(sys.argv[1]), flush_ms=20, max_pending=200))
        await log.start()
        i = 0
        while True:
            if log.healthy:
                i += 1
                log.record({"event": "request", "i": i})
                print(f"{i} {log.durable_seq}", flush=True)
            await asyncio.sleep(0.0005)

    asyncio.run(main())
    """
)


def test_a_killed_gateway_loses_no_more_than_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    accepted = durable = 0
    for line in child.stdout:
        accepted, durable = map(int, line.split())
        if durable >= 300:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    report = verify([path])
    assert report.ok, report.problems
    on_disk = (report.last_seq or 0) - 1  # less the start line
    assert on_disk >= durable - 1, "a line reported durable is missing"
    assert accepted - on_disk <= 200 + 1, f"{accepted - on_disk} accepted lines lost: more than max_pending"


def test_fail_closed_when_the_file_is_replaced_by_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"

    async def main() -> None:
        log = AuditLog(AuditConfig(path, flush_ms=5))
        await log.start()
        log.flush()
        path.rename(tmp_path / "moved-away.jsonl")
        path.mkdir()
        log.record({"event": "request", "i": 1})
        await until(lambda: log.problem is not None)
        assert not log.healthy
        assert "cannot be written" in log.reason and "Is a directory" in log.reason
        path.rmdir()
        await until(lambda: log.healthy)  # writable again: a new file continues the chain
        await log.close()

    asyncio.run(main())
    report = verify([tmp_path / "moved-away.jsonl", path])
    assert report.ok, report.problems


def test_fail_closed_when_the_directory_is_removed(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    path = folder / "audit.jsonl"

    async def main() -> None:
        log = AuditLog(AuditConfig(path, flush_ms=5))
        await log.start()
        log.flush()
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
        log.record({"event": "request", "i": 1})
        await until(lambda: log.problem is not None)
        assert "No such file or directory" in log.reason
        assert not folder.exists(), "the writer must not recreate a removed audit folder"
        await log.close()

    asyncio.run(main())


# -- the writer's encoding: byte for byte what seal writes of the whole dict -------------------------


def sealed_one_by_one(batch: list[tuple[float | str, dict[str, object]]], seq: int, prev: str) -> bytes:
    """The lines as the writer made them before seal_batch: the dict ``{seq, ts, **body}`` sealed."""
    lines = []
    for ts, body in batch:
        seq += 1
        stamp = utc_now(ts) if isinstance(ts, float) else ts
        line, prev = seal({"seq": seq, "ts": stamp, **{k: v for k, v in body.items() if k != "ts"}}, prev)
        lines.append(line)
    return b"".join(lines)


def test_a_batch_is_sealed_byte_for_byte_as_each_dict_would_be() -> None:
    now = 1764465335.9996  # milliseconds are cut, not rounded: .999
    batch: list[tuple[float | str, dict[str, object]]] = [
        (now, {"event": "request", "key": 'al"i\\ce\u2028\n', "model": "m\u00e9", "status": 200, "ms": 0.1,
               "prompt_tokens": None, "nested": {"a": [1, 2.5, True]}, "request_sha256": "sha256:" + "ab" * 32}),
        (now + 0.0004, {"event": "request", "i": 2}),
        ("2026-11-30T01:15:35.123Z", {"event": "audit_start", "pid": 7}),  # a time already formatted
        (now + 1, {"seq": 99, "event": "odd"}),  # members the writer sets itself: the dict's rules
        (now + 2, {"event": "odd", "ts": "the caller's"}),
        (now + 2.5, {"prev": "x", "event": "odd"}),
        (now + 3, {}),
        (now + 4.0000005, {"event": "request", "hash": "in the body"}),
    ]  # fmt: skip
    data, seq, prev = seal_batch(batch, 41, GENESIS)
    assert data == sealed_one_by_one(batch, 41, GENESIS)
    lines = data.splitlines(keepends=True)
    assert seq == 41 + len(batch) and prev == orjson.loads(lines[-1])["hash"]
    assert [orjson.loads(x)["seq"] for x in lines[:3]] == [42, 43, 44]
    assert orjson.loads(lines[0])["ts"] == "2025-11-30T01:15:35.999Z"
    assert seal_batch([], 5, "ab" * 32) == (b"", 5, "ab" * 32)


def test_a_stamp_is_what_utc_now_writes() -> None:
    # Formatted once per second: the rounding (half to even, a carry into the next second), the
    # milliseconds cut, and seconds in any order.
    base = [1764465335.0, 1764465335.9995, 1764465335.9999995, 1764465335.99999949, 1764465336.0004999,
            0.0, 0.5e-6, 1.5e-6, 2.5e-6, 0.9999995, 1.0000005, 951782400.5, 253402300799.999]  # fmt: skip
    values = base + [b + k * 0.000_123_7 for b in (1764465335.0, 1.0) for k in range(0, 20_000, 7)]
    for when in values + list(reversed(values)):
        assert json_stamp(when) == orjson.dumps(utc_now(when)), repr(when)
    for when in (-0.5, -1e-9, -86400.25):  # before 1970: as datetime has it
        assert json_stamp(when) == orjson.dumps(utc_now(when))
    for when in (float("nan"), float("inf"), 253402300800.0):  # utc_now raises: so does the writer
        with pytest.raises((ValueError, OverflowError, OSError)):
            utc_now(when)
        with pytest.raises((ValueError, OverflowError, OSError)):
            json_stamp(when)


def test_the_callers_dict_is_written_as_it_is_stamped_now(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(AuditConfig(path))
    log.open()
    record: dict[str, object] = {"event": "request", "ts": "mine", "i": 1}
    log.record(record)
    log.flush()
    line = orjson.loads(read_lines(path)[-1])
    assert list(line)[:4] == ["seq", "ts", "event", "i"] and line["ts"] != "mine"
    assert dt.datetime.fromisoformat(line["ts"]).tzinfo is not None
    assert verify([path]).ok


# -- export -----------------------------------------------------------------------------------------

LINE = {
    "seq": 7, "ts": "2026-11-30T01:15:35.123Z", "event": "request", "key": 'al]i"ce\\', "key_id": "k1",
    "client": "10.0.0.7", "method": "POST", "route": "/v1/chat/completions", "model": "m|x=y", "status": 503,
    "ms": 12.6, "prompt_tokens": 3, "completion_tokens": None, "prev": "0" * 64, "hash": "ab" * 32,
}  # fmt: skip

SYSLOG = re.compile(
    r"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\[(?:[^\]\\]|\\.)*\]) (.*)$"  # RFC 5424 HEADER SD MSG
)


def test_syslog_lines_are_rfc5424_with_escaped_structured_data() -> None:
    line = to_syslog(LINE, "gw1")
    match = SYSLOG.match(line)
    assert match, line
    pri, ts, host, app, procid, msgid, sd, msg = match.groups()
    assert int(pri) == 13 * 8 + 3  # log audit, error (a 5xx)
    assert (ts, host, app, procid, msgid) == ("2026-11-30T01:15:35.123Z", "gw1", "airlock", "-", "request")
    assert 'key="al\\]i\\"ce\\\\"' in sd
    assert "completion_tokens" not in sd  # null fields are left out
    assert msg.startswith("POST /v1/chat/completions 503")


def test_cef_lines_escape_headers_and_extensions() -> None:
    line = to_cef({**LINE, "method": "PO|ST", "route": "/a\\b"})
    assert line.startswith("CEF:0|airlock|airlock|")
    header = re.split(r"(?<!\\)\|", line, maxsplit=7)
    assert len(header) == 8, header  # 7 header fields and the extension
    assert header[4:7] == ["request", "PO\\|ST /a\\\\b", "7"]
    ext = header[7]
    assert "cs1=m|x\\=y cs1Label=model" in ext
    assert 'suser=al]i"ce\\\\' in ext
    assert "outcome=503" in ext and "cn3=12 cn3Label=latencyMs" in ext
    epoch_ms = int(dt.datetime(2026, 11, 30, 1, 15, 35, 123000, tzinfo=dt.UTC).timestamp() * 1000)
    assert f"rt={epoch_ms}" in ext


def test_export_jsonl_is_the_lines_byte_for_byte_in_chain_order(tmp_path: Path) -> None:
    files = write_log(tmp_path / "audit.jsonl", 60, max_bytes=2000)
    exported = list(export(list(reversed(files)), "jsonl"))
    original = [x.rstrip(b"\n").decode() for f in files for x in read_lines(f)]
    assert exported == original
    assert len(list(export(files, "syslog"))) == len(original) == len(list(export(files, "cef")))


def test_cli_verify_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = Cli(capsys)
    path = tmp_path / "audit.jsonl"
    write_log(path, 12, max_bytes=1500)
    files = sorted(tmp_path.glob("audit.jsonl*"))  # as a shell expands it: the head and lock files too
    assert {f.suffix for f in files} >= {".head", ".lock"}
    result = cli("audit", "verify", *map(str, files))
    assert result.returncode == 0, result.stderr
    assert re.search(r"OK: \d+ files, 14 lines \(seq 1 to 14\), chain whole; the end matches", result.stdout)
    result = cli("audit", "export", "--format", "cef", *map(str, files))
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 14
    lines = read_lines(path)
    path.write_bytes(b"".join(lines[:1] + lines[2:]))
    result = cli("audit", "verify", *map(str, files))
    assert result.returncode == 22
    assert f"the audit chain is broken at {path}:2: seq" in result.stderr
    assert "Traceback" not in result.stderr
    assert cli("audit", "export", *map(str, files)).returncode == 22
    assert cli("audit", "export", "--force", *map(str, files)).returncode == 0


def test_head_file_is_written_beside_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    head = orjson.loads(head_path(path).read_bytes())
    last = orjson.loads(read_lines(path)[-1])
    assert (head["seq"], head["hash"]) == (last["seq"], last["hash"])


@pytest.mark.parametrize("mode", ["off", "sha256"])
def test_config_modes_construct(tmp_path: Path, mode: str) -> None:
    assert AuditLog(AuditConfig(tmp_path / "a.jsonl", text=mode)).config.text == mode  # type: ignore[arg-type]
