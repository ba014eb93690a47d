"""What grading produces: one CheckResult per check, grouped per stage. No torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Every status a check can end in, in the order the report explains them.
STATUSES = ("passed", "failed", "not implemented", "skipped", "timed out", "crashed")
#: The longest hint kept for any check (a learner's 1 MB assertion message stays out of reports).
MAX_HINT = 2000


def cap(text: str, limit: int = MAX_HINT) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return text[: limit - 40].rstrip() + f" ... ({len(text) - limit + 40} more characters)"


@dataclass
class CheckResult:
    nodeid: str  # pytest's id: stages/1.1-.../tests/test_x.py::test_y[cpu-fp32]
    stage: str  # stage id
    name: str  # the check's name as shown (the test's docstring line)
    status: str  # one of STATUSES
    max_points: float
    hint: str = ""  # why it did not pass: what a learner should read
    duration: float = 0.0  # seconds
    cell: str = ""  # the device-matrix cell ("cpu-bf16") of a check that runs on every device; "" otherwise

    @property
    def points(self) -> float:
        return self.max_points if self.status == "passed" else 0.0

    @property
    def graded(self) -> bool:
        """Skipped checks (an absent device) neither earn nor cost points."""
        return self.status != "skipped"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cell")  # part of the name already ("... [cpu-bf16]")
        d["points"] = self.points
        d["duration"] = round(self.duration, 4)
        return d


@dataclass
class StageResult:
    id: str
    title: str
    checks: list[CheckResult] = field(default_factory=list)
    error: str = ""  # a stage-wide problem (tests could not be collected, the child crashed at start-up)
    tests_modified: bool = False  # the stage's course tests differ from the released ones
    duration: float = 0.0

    @property
    def points(self) -> float:
        return sum(c.points for c in self.checks)

    @property
    def max_points(self) -> float:
        return sum(c.max_points for c in self.checks if c.graded)

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def status(self) -> str:
        """passed: every graded check passed; not started: nothing implemented yet; else incomplete.

        error: a stage-wide problem, or no graded check ran at all (a stage is never passed on skips alone).
        """
        graded = [c for c in self.checks if c.graded]
        if self.error or not graded:
            return "error"
        if all(c.status == "passed" for c in graded):
            return "passed"
        if all(c.status == "not implemented" for c in graded):
            return "not started"
        return "incomplete"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "points": self.points,
            "max_points": self.max_points,
            "counts": {s: self.count(s) for s in STATUSES},
            "error": self.error,
            "tests_modified": self.tests_modified,
            "duration": round(self.duration, 3),
            "checks": [c.to_json() for c in self.checks],
        }
