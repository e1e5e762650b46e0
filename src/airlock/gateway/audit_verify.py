"""Check an audit log's hash chain across its rotated files, and export it for a SIEM.

:func:`verify` reads the files in chain order (by the ``seq`` of their first line, whatever order
they are given in) and names every place the chain breaks, the first one first: a line whose hash
does not match its bytes (edited), a ``prev`` that is not the line before's hash (the line before
was edited and resealed, or lines were reordered), a ``seq`` that skips (lines or a rotated file
removed) or goes back (reordered), a partial line (cut), a log that starts after seq 1 without an
``audit_pruned`` line vouching for the cut, and a log that ends before the seq its ``.head`` file
records (lines cut off the end).

:func:`export` renders the lines as RFC 5424 syslog (``<109>1 2026-11-30T01:15:35.123Z host airlock
- request [airlock@32473 ...] POST /v1/chat/completions 200``), ArcSight CEF 0 or the JSON lines
themselves (``jsonl``, byte for byte, so a SIEM can re-verify them).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from airlock import __version__
from airlock.errors import ConfigError
from airlock.gateway.audit import GENESIS, head_path, unseal

ExportFormat = Literal["syslog", "cef", "jsonl"]
#: The structured-data id of syslog lines: 32473 is the enterprise number RFC 5612 sets aside for
#: documentation and examples; a site with its own number can replace it downstream.
SD_ID = "airlock@32473"
#: files beside the log that are not part of the chain: the head (checked on its own) and the lock
SIDECARS = (".head", ".lock")


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int  # 1-based line number in ``file``; 0 for the file as a whole
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    files: list[Path]  # in chain order
    lines: int
    first_seq: int | None
    last_seq: int | None
    problems: list[Problem]  # the first one first
    notes: list[str] = field(default_factory=list)
    head_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Line:
    file: Path
    number: int
    raw: bytes
    data: dict[str, Any] | None
    problem: str | None = None


def _first_seq(path: Path) -> int | None:
    with path.open("rb") as fh:
        first = fh.readline()
    try:
        value = orjson.loads(first).get("seq")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def chain_order(paths: Sequence[Path]) -> tuple[list[Path], list[Problem]]:
    """The files in chain order; empty files are left out, unreadable first lines are problems."""
    ordered: list[tuple[int, Path]] = []
    problems: list[Problem] = []
    for path in dict.fromkeys(paths):
        if path.name.endswith(SIDECARS):  # a shell's audit.jsonl* brings them along: not lines
            continue
        try:
            if path.stat().st_size == 0:
                continue
            seq = _first_seq(path)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
        if seq is None:
            problems.append(Problem(path, 1, "not an audit line (no seq): edited, or not an audit log"))
            continue
        ordered.append((seq, path))
    ordered.sort(key=lambda item: (item[0], str(item[1])))
    for (seq_a, a), (seq_b, b) in itertools.pairwise(ordered):
        if seq_a == seq_b:
            problems.append(Problem(b, 1, f"starts at seq {seq_b}, as {a.name} does: a copy, or an edit"))
    return [path for _, path in ordered], problems


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as fh:
        yield from enumerate(fh, start=1)


def _parse(path: Path, number: int, raw: bytes) -> _Line:
    if not raw.endswith(b"\n"):
        return _Line(path, number, raw, None, "incomplete line (cut off)")
    sealed = unseal(raw)
    if sealed is None:
        return _Line(path, number, raw, None, "not a sealed audit line: edited (its hash is gone or moved)")
    body, stated = sealed
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _Line(path, number, raw, None, "edited: not valid JSON any more")
    if not isinstance(data, dict) or not isinstance(data.get("seq"), int):
        return _Line(path, number, raw, None, "edited: no seq")
    data["hash"] = stated
    if hashlib.sha256(body).hexdigest() != stated:
        return _Line(path, number, raw, data, f"edited: seq {data['seq']}'s hash does not match its content")
    return _Line(path, number, raw, data)


def verify(paths: Sequence[Path], *, head: Path | None = None) -> VerifyReport:
    """Check the chain over ``paths`` (an active log and its rotated files, in any order).

    ``head``: the ``.head`` file to check the end against; by default the one beside the active file
    (the file whose name has no 12-digit rotation suffix) when it exists.
    """
    files, problems = chain_order(paths)
    notes: list[str] = []
    seq: int | None = None  # the last good seq
    prev = GENESIS
    first_seq: int | None = None
    first_prev: str | None = None
    count = 0
    partial: tuple[Path, int, int] | None = None  # a cut line that an audit_recovered line may explain
    vouched = False
    for path in files:
        for number, raw in _lines(path):
            count += 1
            line = _parse(path, number, raw)
            if partial is not None and (line.data or {}).get("event") == "audit_recovered":
                cut_file, cut_line, cut_bytes = partial
                if (
                    line.data
                    and line.data.get("file") == cut_file.name
                    and line.data.get("partial_bytes") == cut_bytes
                ):
                    notes.append(
                        f"{cut_file}:{cut_line}: a line cut by a crash ({cut_bytes} bytes), recorded at seq {line.data['seq']}"
                    )
                    partial = None
            if line.problem == "incomplete line (cut off)":
                if partial is not None:
                    problems.append(Problem(partial[0], partial[1], "incomplete line (cut off)"))
                partial = (path, number, len(raw))
                continue
            if line.data is None:
                problems.append(Problem(path, number, line.problem or "damaged"))
                continue
            data = line.data
            this_seq, this_prev = data["seq"], data.get("prev")
            if line.problem is not None:
                problems.append(Problem(path, number, line.problem))
            elif seq is None:
                first_seq, first_prev = this_seq, this_prev
                if this_seq != 1:
                    pass  # checked at the end: an audit_pruned line may vouch for the cut
                elif this_prev != GENESIS:
                    problems.append(
                        Problem(path, number, "seq 1 does not start the chain (prev is not zeros)")
                    )
            elif this_seq > seq + 1:
                what = _lines_word(this_seq - seq - 1)
                problems.append(Problem(
                    path, number,
                    f"seq {this_seq} follows seq {seq}: {what} removed before it (or lines reordered"
                    + (", or a rotated file removed)" if number == 1 else ")"),
                ))  # fmt: skip
            elif this_seq <= seq:
                problems.append(
                    Problem(path, number, f"seq {this_seq} follows seq {seq}: lines reordered or repeated")
                )
            elif this_prev != prev:
                problems.append(Problem(
                    path, number,
                    f"seq {this_seq}'s prev is not the hash of seq {seq}: the line before was edited, or lines reordered",
                ))  # fmt: skip
            if (
                data.get("event") == "audit_pruned"
                and first_seq is not None
                and (data.get("upto_seq"), data.get("upto_hash")) == (first_seq - 1, first_prev)
            ):
                vouched = True
            seq, prev = this_seq, data["hash"]  # go on from here, so that every break is named
    if partial is not None:
        problems.append(Problem(partial[0], partial[1], "incomplete line (cut off)"))
    if files and first_seq is not None and first_seq > 1:
        if vouched:
            notes.append(
                f"the log starts at seq {first_seq}: older files were pruned (an audit_pruned line says so)"
            )
        else:
            problems.insert(0, Problem(
                files[0], 1,
                f"the log starts at seq {first_seq}: lines 1 to {first_seq - 1} are missing "
                "(give the older rotated files too)",
            ))  # fmt: skip
    head_checked = False
    head = head if head is not None else _default_head(paths)
    if head is not None and head.exists() and files:
        head_checked = True
        try:
            recorded = orjson.loads(head.read_bytes())
        except orjson.JSONDecodeError:
            problems.append(Problem(head, 0, "the head file is not valid JSON"))
        else:
            head_seq = recorded.get("seq") if isinstance(recorded, dict) else None
            if isinstance(head_seq, int) and (seq or 0) < head_seq:
                problems.append(Problem(
                    files[-1], 0,
                    f"the log ends at seq {seq} but {head.name} records seq {head_seq}: "
                    f"{_lines_word(head_seq - (seq or 0))} cut off the end",
                ))  # fmt: skip
    # the first break first; a problem of a file as a whole (line 0: its end) after its lines
    problems.sort(key=lambda p: (files.index(p.file) if p.file in files else len(files), p.line or 1 << 62))
    return VerifyReport(files, count, first_seq, seq, problems, notes, head_checked)


def _lines_word(count: int) -> str:
    return "1 line" if count == 1 else f"{count} lines"


def _default_head(paths: Sequence[Path]) -> Path | None:
    for path in paths:
        suffix = path.suffix[1:]
        if not (suffix.isdigit() and len(suffix) == 12):
            return head_path(path)
    return None


# -- export ---------------------------------------------------------------------------------------

_SEVERITY_SYSLOG = {2: 6, 3: 6, 4: 5, 5: 3}  # info, notice for 4xx, error for 5xx


def _status_class(data: dict[str, Any]) -> int:
    status = data.get("status")
    return status // 100 if isinstance(status, int) else 2


def _sd_escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _sd_name(name: str) -> str:
    """An SD-PARAM name: printable US-ASCII but '=', ' ', ']' and '"', at most 32 characters."""
    return "".join(c for c in name if 33 <= ord(c) <= 126 and c not in '= ]"')[:32] or "x"


def to_syslog(data: dict[str, Any], hostname: str) -> str:
    """One RFC 5424 line: facility 13 (log audit), the event as MSGID, every field as SD-PARAMs."""
    event = str(data.get("event", "request"))
    severity = 4 if event.startswith("audit_") and event not in ("audit_start", "audit_stop") else (
        _SEVERITY_SYSLOG.get(_status_class(data), 6)
    )  # fmt: skip
    pri = 13 * 8 + severity
    params = " ".join(
        f'{_sd_name(k)}="{_sd_escape(v)}"' for k, v in data.items() if k != "ts" and v is not None
    )
    msgid = _sd_name(event)
    text = " ".join(
        str(data[k]) for k in ("method", "route", "status", "key", "model") if data.get(k) is not None
    )
    return f"<{pri}>1 {data.get('ts', '-')} {hostname or '-'} airlock - {msgid} [{SD_ID} {params}] {text or event}"


def _cef_header(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cef_value(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")


#: airlock's field -> (CEF key, label for a custom field or None)
_CEF_FIELDS: dict[str, tuple[str, str | None]] = {
    "seq": ("externalId", None),
    "client": ("src", None),
    "key": ("suser", None),
    "key_id": ("suid", None),
    "method": ("requestMethod", None),
    "route": ("request", None),
    "model": ("cs1", "model"),
    "engine": ("cs2", "engine"),
    "weights": ("cs3", "weights"),
    "request_id": ("cs4", "requestId"),
    "hash": ("cs5", "chainHash"),
    "action": ("act", None),
    "prompt_tokens": ("cn1", "promptTokens"),
    "completion_tokens": ("cn2", "completionTokens"),
    "ms": ("cn3", "latencyMs"),
}


def to_cef(data: dict[str, Any]) -> str:
    """One ArcSight CEF:0 line; header fields escape ``\\`` and ``|``, extension values ``\\``, ``=``
    and line breaks; the fields CEF has no key for go in labelled custom fields (cs1..cs5, cn1..cn3)."""
    event = str(data.get("event", "request"))
    klass = _status_class(data)
    severity = 8 if event.startswith("audit_") and event not in ("audit_start", "audit_stop") else (
        {4: 5, 5: 7}.get(klass, 3)
    )  # fmt: skip
    name = " ".join(str(data[k]) for k in ("method", "route") if data.get(k)) or event
    ext: list[str] = []
    ts = data.get("ts")
    if isinstance(ts, str):
        try:
            when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
            ext.append(f"rt={int(when.timestamp() * 1000)}")
        except ValueError:
            pass
    if isinstance(data.get("status"), int):
        ext.append(f"outcome={data['status']}")
    for source, (key, label) in _CEF_FIELDS.items():
        value = data.get(source)
        if value is None:
            continue
        if key.startswith("cn"):
            if not isinstance(value, int | float):
                continue
            value = int(value)
        ext.append(f"{key}={_cef_value(value)}")
        if label is not None:
            ext.append(f"{key}Label={label}")
    header = "|".join(_cef_header(v) for v in ("airlock", "airlock", __version__, event, name, severity))
    return f"CEF:0|{header}|" + " ".join(ext)


def export(paths: Sequence[Path], fmt: ExportFormat, *, hostname: str | None = None) -> Iterator[str]:
    """The lines of the log in chain order, rendered in ``fmt`` (without line breaks)."""
    files, _ = chain_order(paths)
    host = hostname if hostname is not None else socket.gethostname()
    for path in files:
        for _, raw in _lines(path):
            if fmt == "jsonl":
                yield raw.rstrip(b"\n").decode("utf-8", errors="replace")
                continue
            line = _parse(path, 0, raw)
            if line.data is None:
                continue
            yield to_syslog(line.data, host) if fmt == "syslog" else to_cef(line.data)
