"""Copies of the course without solutions: a learner-facing release, and the grading tree of one stage. No torch.

    python -m grader.release DIR [--force]

writes a copy of this course to DIR for instructors who hand the course out: every stage's
lesson, skeleton and tests, the grader and the shared code, but no ``solution/`` folder and
none of the course's own tests (``tests/``, whose mistake catalogue quotes the solutions).
Grading works there with ``--deps mine`` (the learner's own earlier stages; the grader picks it
by itself when the references are absent), and an instructor grades such a copy with
``python -m grader STAGE --submission DIR`` from the full course, where the references are.

``stage_tree`` builds what the instructor modes (``--submission``, batch, Gradescope) grade one
stage in: a temporary tree holding that stage's tests and the learner's file for it, and the
references (or, with ``--deps mine``, the learner's files) of the earlier stages it builds on —
never the graded stage's own ``solution/``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from shared.registry import BY_ID, ROOT, STAGES, Stage

#: What a course copy holds besides ``stages/`` (the grading machinery and the learner's tools).
TOP_FILES = ("README.md", "requirements.txt", "requirements-dev.txt", "noxfile.py", "pyproject.toml", "conftest.py", ".gitignore")
TOP_DIRS = ("grader", "shared")
#: The files the checks' process needs (a stage tree holds these and the stages' folders only).
GRADING_FILES = ("pyproject.toml", "conftest.py")
_JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


class SubmissionError(Exception):
    """A submission's file cannot be graded safely; the message is one line."""


def closure(stage: Stage) -> list[Stage]:
    """The earlier stages ``stage`` builds on, directly or through others, in course order."""
    seen: set[str] = set()
    todo = list(stage.deps)
    while todo:
        sid = todo.pop()
        if sid in seen or sid not in BY_ID:
            continue
        seen.add(sid)
        todo.extend(BY_ID[sid].deps)
    return [s for s in STAGES if s.id in seen]


def _copy_stage_folder(stage: Stage, dest_root: Path, keep: Iterable[str], src_root: Path = ROOT) -> Path:
    """``stage``'s folder without its version folders except ``keep`` (e.g. ``("solution",)``)."""
    src = src_root / "stages" / stage.folder.name
    dest = dest_root / "stages" / stage.folder.name
    dest.mkdir(parents=True, exist_ok=True)
    keep = set(keep)
    if not src.is_dir():
        return dest
    for entry in src.iterdir():
        if entry.name in ("skeleton", "solution") and entry.name not in keep:
            continue
        if entry.name in ("__pycache__",):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name, ignore=_JUNK, symlinks=False, dirs_exist_ok=True)
        elif entry.is_file():
            shutil.copy2(entry, dest / entry.name)
    return dest


def _copy_grading_machinery(dest: Path, src_root: Path = ROOT) -> None:
    for name in GRADING_FILES:
        if (src_root / name).is_file():
            shutil.copy2(src_root / name, dest / name)
    for name in TOP_DIRS:
        shutil.copytree(src_root / name, dest / name, ignore=_JUNK, dirs_exist_ok=True)


def learner_file(submission: Path, stage: Stage) -> Path | None:
    """The submission's file for ``stage`` (a checkout's skeleton file, or a flat folder's), or None if absent.

    Raises SubmissionError for a file that is a symbolic link or lies outside the submission:
    either could point the grader at the course's own reference.
    """
    sub = submission.resolve()
    candidates = [submission / "stages" / stage.folder.name / "skeleton" / f"{stage.module}.py", submission / f"{stage.module}.py"]
    for cand in candidates:
        if not (cand.is_symlink() or cand.exists()):
            continue
        rel = cand.relative_to(submission)
        if cand.is_symlink():
            raise SubmissionError(f"{rel} in the submission is a symbolic link: submit the file itself")
        real = cand.resolve()
        if sub != real and sub not in real.parents:
            raise SubmissionError(f"{rel} in the submission resolves outside it ({real}): submit the file itself")
        if not real.is_file():
            raise SubmissionError(f"{rel} in the submission is not a regular file")
        return real
    return None


def stage_tree(stage: Stage, dest: Path, *, submission: Path, deps: str, src_root: Path = ROOT) -> None:
    """Build the tree that grades ``stage`` of ``submission`` at ``dest`` (see the module docstring).

    Raises SubmissionError when a file the grade needs cannot be taken from the submission safely.
    """
    dest.mkdir(parents=True, exist_ok=True)
    _copy_grading_machinery(dest, src_root)
    needed = [(stage, True)] + [(d, False) for d in closure(stage)]
    for s, graded in needed:
        if graded or deps == "mine":
            folder = _copy_stage_folder(s, dest, keep=(), src_root=src_root)
            mine = learner_file(submission, s)
            (folder / "skeleton").mkdir(exist_ok=True)
            if mine is not None:
                shutil.copyfile(mine, folder / "skeleton" / f"{s.module}.py")  # a copy: later changes cannot reach it
        else:
            _copy_stage_folder(s, dest, keep=("solution",), src_root=src_root)


def references_present(stages: Iterable[Stage], root: Path = ROOT) -> bool:
    """Whether every earlier stage these stages build on has its reference here (a release has none)."""
    return all((root / "stages" / d.folder.name / "solution" / f"{d.module}.py").is_file() for s in stages for d in closure(s))


def write_release(dest: Path, src_root: Path = ROOT) -> None:
    """A learner-facing copy of the course at ``dest``: no solutions, no course tests."""
    staging = dest.with_name(dest.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        for name in TOP_FILES:
            if (src_root / name).is_file():
                shutil.copy2(src_root / name, staging / name)
        for name in TOP_DIRS:
            shutil.copytree(src_root / name, staging / name, ignore=_JUNK)
        for s in STAGES:
            _copy_stage_folder(s, staging, keep=("skeleton",), src_root=src_root)
        leaked = sorted(p.relative_to(staging) for p in staging.rglob("solution") if p.is_dir())
        if leaked:  # pragma: no cover - a guard on the copy above
            raise RuntimeError(f"solution folders in the release: {leaked}")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[no-untyped-def]
        print(f"release: {message} (see `python -m grader.release --help`)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m grader.release", description="Write a learner-facing copy of the course without solutions.")
    p.add_argument("dest", type=Path, metavar="DIR", help="where to write the copy (must not exist, unless --force)")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    args = p.parse_args(argv)
    dest: Path = args.dest
    try:
        real = dest.resolve()
    except OSError as exc:
        print(f"release: {dest}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if real == ROOT or ROOT in real.parents or real in ROOT.parents:
        print(f"release: {dest} is inside (or holds) this course; choose a folder elsewhere", file=sys.stderr)
        return 2
    if dest.exists() and not args.force:
        print(f"release: {dest} exists; use --force to replace it", file=sys.stderr)
        return 2
    if dest.exists() and not dest.is_dir():
        print(f"release: {dest} is not a folder", file=sys.stderr)
        return 2
    try:
        write_release(dest)
    except OSError as exc:
        print(f"release: could not write {dest}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote a learner copy of the course without solutions to {dest}")
    print(f"learners grade there with `nox -s grade -- <stage>` (earlier stages: their own); you grade it with "
          f"`python -m grader <stage> --submission {dest}` from this course")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
