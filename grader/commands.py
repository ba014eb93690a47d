"""What the long-running commands (train, generate, finetune, train --nproc) share: their two error
kinds and the wrapper that turns the learner's exceptions into one line. Pure Python, no torch.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["UsageError", "LearnerError", "learner_line", "call_learner"]


class UsageError(Exception):
    """Bad input: one line, exit status 2."""


class LearnerError(Exception):
    """The learner's code raised (or is not implemented yet): one line, exit status 1."""


def learner_line(exc: BaseException) -> str:
    """``2.3-pretraining/skeleton/pretraining.py line 97, in get_batch``: the deepest frame in a stage file, else ''."""
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if "stages" in path.parts:
            found = f"{path.parent.parent.name}/{path.parent.name}/{path.name} line {frame.lineno}, in {frame.name}"
    return found


def call_learner(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run learner code; NotImplementedError and other errors become one LearnerError line."""
    try:
        return fn(*args, **kwargs)
    except (UsageError, LearnerError, KeyboardInterrupt):
        raise
    except NotImplementedError as exc:
        where = learner_line(exc)
        raise LearnerError(
            f"{what}: not implemented yet ({exc or 'NotImplementedError'}{', ' + where if where else ''}); "
            "finish it (nox -s grade -- <stage>) or run with --deps solution / --version solution"
        ) from None
    except Exception as exc:  # the learner's bug: say where, in one line
        where = learner_line(exc)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise LearnerError(
            f"{what} raised {type(exc).__name__}: {first}" + (f" (at {where})" if where else "")
        ) from None
