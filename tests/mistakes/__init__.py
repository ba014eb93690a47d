"""Named mistakes, applied to the reference solutions by ``tests/test_mistakes.py``.

One module per stage (``stage_1_4.py`` for stage 1.4) defines ``MISTAKES``, a list of
``Mistake``. The course test copies the stage's solution file, applies the edit,
grades the copy and requires that (a) some check fails and (b) some failing check's
hint contains ``hint`` — i.e. the grader names the mistake the learner made.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mistake:
    stage: str  # stage id, e.g. "1.4"
    name: str  # the mistake, as the lesson names it
    old: str  # an exact, unique snippet of the solution file ...
    new: str  # ... and what a learner making this mistake writes instead
    hint: str  # a substring the failing check's hint must contain (case-insensitive)
    check: str = ""  # optional: pytest -k expression limiting which checks run (faster)
