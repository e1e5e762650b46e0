"""The doctor's result types: one :class:`Check` per thing checked, a :class:`DoctorReport` of them all."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from airlock.common.progress import ProgressSink

Status = Literal["pass", "warn", "fail", "skip"]
_RANK: dict[Status, int] = {"skip": 0, "pass": 0, "warn": 1, "fail": 2}

#: ``airlock doctor``'s exit codes: every check passed or was skipped; one warned; one failed.
EXIT_PASS = 0
EXIT_WARN = 30
EXIT_FAIL = 31


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``detail`` says what was found, ``fix`` what to do when it warns or fails."""

    name: str  # e.g. "gpus", "driver vs docker.io/vllm/vllm-openai:v0.11.0"
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorOptions:
    spec: Path | None = None
    store: Path | None = None  # default: the spec's store:, else Settings' store
    bundle: Path | None = None  # a bundle folder (or one volume) whose install must fit
    deep: bool = False  # rehash the store's files instead of comparing sizes
    site_networks: tuple[str, ...] = ()  # CIDRs whose routes are not routes out
    probes: tuple[str, ...] = ()  # HOST:PORT an operator asked to try one TCP connect to
    progress: ProgressSink | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def worst(self) -> Status:
        """fail, else warn, else pass (a report of skips only passes)."""
        worst: Status = "pass"
        for check in self.checks:
            if _RANK[check.status] > _RANK[worst]:
                worst = check.status
        return worst

    @property
    def exit_code(self) -> int:
        return {"pass": EXIT_PASS, "warn": EXIT_WARN, "fail": EXIT_FAIL}.get(self.worst, EXIT_PASS)

    def counts(self) -> dict[Status, int]:
        counts: dict[Status, int] = {"pass": 0, "warn": 0, "fail": 0, "skip": 0}
        for check in self.checks:
            counts[check.status] += 1
        return counts

    def by_name(self, name: str) -> Check:
        """The first check of that name (KeyError if none)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def to_dict(self) -> dict[str, object]:
        return {
            "worst": self.worst,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "checks": [asdict(c) for c in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
