"""``airlock verify``: is this bundle complete, intact and from a trusted key?

In order: the manifest's signature (and form: every path safe), then every volume's own copies of
the manifest, signature and index (a damaged copy is reported with its volume, even where another
copy verifies), then every blob's hash on every volume present (in parallel, streaming, chunk by chunk so one large file spreads over all cores),
then no unlisted file, then no link on a volume (a link could lead outside it; links are never
followed, their targets never read). Volumes of the set that are not mounted are reported, not
fatal to the check of the others, so one volume can be checked on its own.

The outcome is a :class:`VerifyReport`; :meth:`VerifyReport.raise_for_problems` turns it into the
error, and so the exit code, of the gravest problem::

    11 format  12 signature  13 unsafe path  14 corrupt  15 unlisted file  16 missing volume

Example::

    report = verify(VerifyOptions(VolumeSet([Path("/media/usb")], trust=[Path("site.pub")])))
    for p in report.problems: print(p.kind, p.volume, p.message)
    report.raise_for_problems()
"""

from __future__ import annotations

import os
import stat
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from airlock.bundle.format import layout
from airlock.bundle.format.manifest import Entry, Manifest
from airlock.bundle.format.reader import MountedVolume, OpenBundle, VolumeSet
from airlock.common.fileio import hash_range, human
from airlock.common.progress import Meter, ProgressSink
from airlock.common.words import counted, numbers
from airlock.errors import (
    BundleError,
    IntegrityError,
    MissingVolumeError,
    UnlistedFileError,
    UnsafePathError,
)

ProblemKind = Literal["unsafe_path", "corrupt", "unlisted", "missing_volume"]
_SEVERITY: dict[ProblemKind, type[BundleError]] = {
    "unsafe_path": UnsafePathError,
    "corrupt": IntegrityError,
    "unlisted": UnlistedFileError,
    "missing_volume": MissingVolumeError,
}


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    message: str
    volume: int | None = None
    path: str | None = None  # inside the volume
    files: tuple[str, ...] = ()  # logical files affected: "artifact/path"


@dataclass(frozen=True)
class VerifyOptions:
    volumes: VolumeSet
    partial: bool = False  # check only the volumes given: missing ones are noted, not a problem


@dataclass(frozen=True)
class VerifyReport:
    bundle: str
    manifest: Manifest
    signed_by: str | None
    present: dict[int, Path]
    missing: list[int]
    problems: list[Problem]
    checked_bytes: int
    seconds: float
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def corrupt_volumes(self) -> list[int]:
        return sorted({p.volume for p in self.problems if p.kind == "corrupt" and p.volume is not None})

    def raise_for_problems(self) -> None:
        report_problems(self.problems)


def owners(manifest: Manifest) -> dict[str, list[str]]:
    """blob sha256 -> the logical files ("artifact/path") that hold it."""
    out: dict[str, list[str]] = defaultdict(list)
    for artifact, f in manifest.iter_files():
        out[f.sha256].append(f"{artifact.name}/{f.path}")
    return out


class VolumeScan(NamedTuple):
    files: set[str]  # regular files
    odd: list[str]  # links, devices, anything that is not a regular file


class Structure(NamedTuple):
    problems: list[Problem]
    sound: dict[int, list[Entry]]  # per volume, the entries present at the right size (to hash)


class Checked(NamedTuple):
    problems: list[Problem]
    hashed_bytes: int


def scan_volume(root: Path) -> VolumeScan:
    """The regular files, links and other non-files under a volume root, as relative paths; never follows links."""
    files: set[str] = set()
    odd: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in list(dirnames):
            if (base / name).is_symlink():
                odd.append((base / name).relative_to(root).as_posix())
                dirnames.remove(name)
        for name in filenames:
            full = base / name
            rel = full.relative_to(root).as_posix()
            mode = os.lstat(full).st_mode
            if stat.S_ISREG(mode):
                files.add(rel)
            else:
                odd.append(rel)
    return VolumeScan(files, odd)


@dataclass(frozen=True)
class _Task:
    volume: int
    entry: Entry
    file: Path
    offset: int
    length: int
    expected: str


def _tasks(volume: MountedVolume, entries: list[Entry], chunk_size: int) -> list[_Task]:
    return [
        _Task(volume.number, e, volume.root / e.path, off, length, sha)
        for e in entries
        for off, length, sha in e.pieces(chunk_size)
    ]


def _hash_task(task: _Task, meter: Meter) -> str | None:
    """None if the bytes match; else why not."""
    try:
        sha = hash_range(task.file, task.offset, task.length, on_bytes=meter, follow=False)
    except EOFError:
        return "truncated"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if sha != task.expected:
        where = f" (bytes {task.offset}-{task.offset + task.length})" if task.entry.chunks else ""
        return f"hash mismatch{where}"
    return None


def structure_problems(opened: OpenBundle, volumes: list[MountedVolume]) -> Structure:
    """Links, unlisted files, and missing or wrong-sized entries on ``volumes``, found without hashing.

    Returns the problems and, per volume, the entries that are there at the right size (to hash).
    """
    manifest = opened.manifest
    who = owners(manifest)
    problems: list[Problem] = []
    sound: dict[int, list[Entry]] = {}
    for v in volumes:
        files, odd = scan_volume(v.root)
        entries = manifest.volumes[v.number - 1].entries
        sound[v.number] = []
        damaged = [d for d in opened.damaged if d.volume == v.number]
        problems += [Problem(d.kind, d.message, d.volume, d.path) for d in damaged]
        odd = [rel for rel in odd if rel not in {d.path for d in damaged}]  # already named above
        for e in entries:
            affected = tuple(who.get(e.blob or "", []))
            if e.path in odd or any(e.path.startswith(o + "/") for o in odd):
                continue  # reported below as an unsafe path; never read through a link
            if e.path not in files:
                problems.append(
                    Problem(
                        "corrupt",
                        f"volume {v.number}: {e.path} is missing{_of(affected)}",
                        v.number,
                        e.path,
                        affected,
                    )
                )
                continue
            size = (v.root / e.path).stat().st_size
            if size != e.stored_size:
                how = "truncated" if size < e.stored_size else "too long"
                problems.append(
                    Problem(
                        "corrupt",
                        f"volume {v.number}: {e.path} is {how} ({size} of {e.stored_size} bytes){_of(affected)}",
                        v.number,
                        e.path,
                        affected,
                    )
                )
                continue
            sound[v.number].append(e)
        problems += _sbom_problem(v, manifest, files)
        problems += _bootstrap_problems(v, manifest, files)
        listed = {e.path for e in entries} | set(layout.METADATA_FILES) | _bootstrap_paths(v, manifest)
        for rel in sorted(files - listed):
            problems.append(
                Problem("unlisted", f"volume {v.number}: {rel} is not listed in the manifest", v.number, rel)
            )
        for rel in sorted(odd):
            problems.append(
                Problem(
                    "unsafe_path",
                    f"volume {v.number}: {rel} is a link or special file; volumes hold only plain files",
                    v.number,
                    rel,
                )
            )
    return Structure(problems, sound)


def _sbom_problem(v: MountedVolume, manifest: Manifest, files: set[str]) -> list[Problem]:
    """The SBOM on a volume must be the one the manifest names (its size and SHA-256)."""
    ref = manifest.sbom
    if ref is None:
        return []
    if layout.SBOM not in files:
        return [Problem("corrupt", f"volume {v.number}: {layout.SBOM} is missing", v.number, layout.SBOM)]
    path = v.root / layout.SBOM
    if path.stat().st_size != ref.size or hash_range(path, 0, ref.size, follow=False) != ref.sha256:
        return [
            Problem(
                "corrupt",
                f"volume {v.number}: {layout.SBOM} is not the one the manifest names",
                v.number,
                layout.SBOM,
            )
        ]
    return []


def _bootstrap_paths(v: MountedVolume, manifest: Manifest) -> set[str]:
    boot = manifest.bootstrap
    if boot is None or boot.volume != v.number:
        return set()
    return {f"{layout.BOOTSTRAP_DIR}/{f.path}" for f in boot.files}


def _bootstrap_problems(v: MountedVolume, manifest: Manifest, files: set[str]) -> list[Problem]:
    """Each file of the first volume's bootstrap folder (--with-airlock) must be the one the manifest lists."""
    boot = manifest.bootstrap
    if boot is None or boot.volume != v.number:
        return []
    problems = []
    for f in boot.files:
        rel = f"{layout.BOOTSTRAP_DIR}/{f.path}"
        path = v.root / rel
        if rel not in files:
            why = "is missing"
        elif path.stat().st_size != f.size:
            why = f"is {path.stat().st_size} bytes, not {f.size}"
        elif hash_range(path, 0, f.size, follow=False) != f.sha256:
            why = "does not match its SHA-256 in the manifest"
        else:
            continue
        problems.append(
            Problem("corrupt", f"volume {v.number}: {rel} {why} (airlock's bootstrap)", v.number, rel)
        )
    return problems


def check_structure(opened: OpenBundle, volumes: list[MountedVolume]) -> None:
    """Raise the gravest structural problem of ``volumes`` (install runs this before writing)."""
    problems, _ = structure_problems(opened, volumes)
    report_problems(problems)


def report_problems(problems: list[Problem]) -> None:
    for kind, cls in _SEVERITY.items():
        found = [p for p in problems if p.kind == kind]
        if found:
            more = f" (and {counted(len(problems) - 1, 'more problem')})" if len(problems) > 1 else ""
            raise cls(found[0].message + more, problems=tuple(p.message for p in problems))


def check_volumes(
    opened: OpenBundle, volumes: list[MountedVolume], *, workers: int, progress: ProgressSink | None
) -> Checked:
    """Hash every entry on ``volumes`` and check their structure."""
    manifest = opened.manifest
    who = owners(manifest)
    structural, sound = structure_problems(opened, volumes)
    tasks: list[_Task] = []
    for v in volumes:
        tasks += _tasks(v, sound[v.number], manifest.chunk_size)
    meter = Meter(progress, "verify", sum(t.length for t in tasks))
    bad: dict[tuple[int, str], str] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="verify") as pool:
            for task, why in zip(tasks, pool.map(lambda t: _hash_task(t, meter), tasks), strict=True):
                if why is not None:
                    bad.setdefault((task.volume, task.entry.path), why)
    finally:
        meter.finish()
    problems = [p for p in structural if p.kind == "corrupt"]
    for (number, path), why in sorted(bad.items()):
        entry = next(e for e in manifest.volumes[number - 1].entries if e.path == path)
        affected = tuple(who.get(entry.blob or "", []))
        problems.append(
            Problem("corrupt", f"volume {number}: {path}: {why}{_of(affected)}", number, path, affected)
        )
    problems += [p for p in structural if p.kind != "corrupt"]
    return Checked(problems, sum(t.length for t in tasks))


def _of(files: tuple[str, ...]) -> str:
    if not files:
        return ""
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return f" (holds {shown})"


def missing_problems(opened: OpenBundle) -> list[Problem]:
    who = owners(opened.manifest)
    problems = []
    for number in opened.missing:
        volume = opened.manifest.volumes[number - 1]
        affected = tuple(sorted({f for e in volume.entries for f in who.get(e.blob or "", [])}))
        what = "parity" if volume.role == "parity" else counted(len(affected), "file")
        problems.append(
            Problem(
                "missing_volume",
                f"volume {number} of {len(opened.manifest.volumes)} is not mounted ({what})",
                number,
                None,
                affected,
            )
        )
    return problems


def verify(options: VerifyOptions) -> VerifyReport:
    started = time.monotonic()
    volumes = options.volumes
    opened = volumes.open()
    present = [opened.volumes[n] for n in sorted(opened.volumes)]
    problems, checked = check_volumes(opened, present, workers=volumes.workers, progress=volumes.progress)
    notes = list(opened.notes)
    if options.partial:
        if opened.missing:
            notes.append(f"checked {numbers(opened.volumes)} only (--partial)")
    else:
        problems += missing_problems(opened)
    not_carried = [b for b in opened.manifest.blobs if not b.carried]
    if not_carried:
        size = sum(b.size for b in not_carried)
        notes.append(
            f"{counted(len(not_carried), 'blob')} ({human(size)}) not carried: the store must already hold "
            f"{'it' if len(not_carried) == 1 else 'them'} (a delta bundle)"
        )
    return VerifyReport(
        bundle=opened.bundle,
        manifest=opened.manifest,
        signed_by=opened.signed_by,
        present={n: v.root for n, v in opened.volumes.items()},
        missing=opened.missing,
        problems=problems,
        checked_bytes=checked,
        seconds=time.monotonic() - started,
        notes=notes,
    )
