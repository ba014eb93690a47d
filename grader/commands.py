"""What the long-running commands (train, generate, finetune, train --nproc) share: their two error
kinds and the wrapper that turns the learner's exceptions into one line. Pure Python, no torch.
"""

from __future__ import annotations

import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["UsageError", "LearnerError", "learner_line", "call_learner", "stop_on_signal"]


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


@contextmanager
def stop_on_signal() -> Iterator[Callable[[], bool]]:
    """Ctrl-C (or SIGTERM) once asks a training loop to stop; twice stops it now.

    Yields ``requested()``: False until the first signal, True after it (the loop finishes its step,
    saves and returns). A second signal raises KeyboardInterrupt. The old handlers come back on exit.
    """
    stop: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if stop:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        stop.append(signum)

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        yield lambda: bool(stop)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
