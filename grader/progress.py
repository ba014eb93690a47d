"""The learner's progress: the last result per stage and version, in a git-ignored file.

Written atomically (a temp file, then ``os.replace``) under a lock, so two graders
running at once, a Ctrl-C or a crash never leave it half-written. A file that cannot
be read is set aside (``progress.json.corrupt``) and reported in one line.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.registry import ROOT

SCHEMA = 1


#: How long the grader waits for another grader's lock on the progress file.
LOCK_WAIT_S = 10.0


class ProgressError(Exception):
    """The progress file exists but cannot be used (or is locked); the message is one line."""


def default_path() -> Path:
    return Path(os.environ.get("LLMFS_PROGRESS", ROOT / ".llmfs" / "progress.json"))


@contextlib.contextmanager
def _locked(path: Path, wait_s: float | None = None) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` (fcntl on POSIX, msvcrt on Windows), waited for at most ``wait_s``.

    Raises ProgressError when another process holds it longer: a stuck grader never makes this one hang.
    """
    wait_s = LOCK_WAIT_S if wait_s is None else wait_s
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(path.with_suffix(path.suffix + ".lock"), "a+b") as f:
        if os.name == "posix":
            import fcntl

            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ProgressError(f"another grader has held the lock on {path} for over {wait_s:g} s") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        else:  # pragma: no cover - Windows
            import msvcrt

            f.seek(0)
            while True:
                try:
                    msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise ProgressError(f"another grader has held the lock on {path} for over {wait_s:g} s") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                f.seek(0)
                with contextlib.suppress(OSError):
                    msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


#: The fields of one stage's record, and the types each must have (what the stage map prints).
_FIELDS: dict[str, tuple[type, ...]] = {
    "status": (str,),
    "points": (int, float),
    "max_points": (int, float),
    "when": (str,),
}


def _validate(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise ValueError("not a progress record")
    for sid, versions in data["stages"].items():
        if not isinstance(versions, dict) or not all(isinstance(v, dict) for v in versions.values()):
            raise ValueError(f"entry for stage {sid!r} is malformed")
        for version, rec in versions.items():
            for key, types in _FIELDS.items():
                value = rec.get(key)
                if not isinstance(value, types) or isinstance(value, bool):
                    raise ValueError(f"stage {str(sid)[:20]!r} ({str(version)[:20]}): field {key!r} is missing or not a {types[0].__name__}")
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"stage {str(sid)[:20]!r} ({str(version)[:20]}): field {key!r} is not finite")
    return data


def read(path: Path | None = None) -> dict[str, Any]:
    """The progress record; an empty one when there is none. Raises ProgressError if unreadable."""
    path = path or default_path()
    if not path.exists():
        return {"schema": SCHEMA, "stages": {}}
    try:
        return _validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProgressError(f"{path} is unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None


def set_aside(path: Path | None = None) -> Path:
    """Move an unreadable progress file out of the way; returns where it went."""
    path = path or default_path()
    dest = path.with_suffix(path.suffix + ".corrupt")
    os.replace(path, dest)
    return dest


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def record(entries: dict[str, dict[str, Any]], version: str, path: Path | None = None) -> None:
    """Store each stage's latest result for ``version`` (stage id -> summary), keeping the rest."""
    path = path or default_path()
    with _locked(path):
        try:
            data = read(path)
        except ProgressError:
            set_aside(path)
            data = {"schema": SCHEMA, "stages": {}}
        for sid, summary in entries.items():
            data["stages"].setdefault(sid, {})[version] = summary
        data["schema"] = SCHEMA
        write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
