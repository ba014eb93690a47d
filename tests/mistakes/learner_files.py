"""Complete learner files, written as a learner would from the lesson alone (issue 11, item 8).

``tests/mistakes/learners/stage_<id with _>/<name>.py`` is a whole file in the stage's
module's place. Its docstring says what it is, on lines of their own::

    mistake: scores scaled by sqrt(d_model) instead of sqrt(d_head)
    expect: sqrt(d_model) instead of sqrt(d_head)

(a realistic mistake: grading must fail, some hint must contain ``expect``, and no hint
may name anything else), or::

    correct: einsum for the scores, a loop over the heads

(correct code in another style: it must get full marks). An optional ``check:`` line is a
pytest -k expression limiting the checks run (as ``Mistake.check``), for slow stages.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "learners"


@dataclass(frozen=True)
class LearnerFile:
    stage: str  # "1.4"
    path: Path
    mistake: str  # what is wrong ("" for a correct file)
    expect: str  # a substring the naming hint must contain (case-insensitive)
    correct: str  # how the correct file differs in style ("" for a mistake)
    check: str = ""  # optional pytest -k expression: which checks to run

    @property
    def key(self) -> str:
        return f"file:{self.path.name}"

    @property
    def id(self) -> str:
        return f"{self.stage}/{self.path.stem}"


def _meta(path: Path) -> dict[str, str]:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    out: dict[str, str] = {}
    for line in doc.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("mistake", "expect", "correct", "check"):
            out[key.strip()] = value.strip()
    return out


def learner_files(stage: str | None = None) -> list[LearnerFile]:
    out: list[LearnerFile] = []
    for folder in sorted(ROOT.glob("stage_*")):
        sid = folder.name.removeprefix("stage_").replace("_", ".")
        if stage is not None and sid != stage:
            continue
        for path in sorted(folder.glob("*.py")):
            m = _meta(path)
            out.append(LearnerFile(sid, path, m.get("mistake", ""), m.get("expect", ""), m.get("correct", ""), m.get("check", "")))
    return out
