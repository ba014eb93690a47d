"""Hashes of the course tests, so the grader can say plainly when they were changed. No torch.

A learner (or a merge) that edits ``stages/<id>/tests`` or the shared checking code could
turn a failing check green. The released hashes live in ``grader/test_hashes.json``;
the grader compares before grading and marks a changed stage's result as unofficial.

    python -m grader.integrity            # list stages whose tests differ; exit 1 if any
    python -m grader.integrity --update   # maintainers: record the current tests as released
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from shared.registry import ROOT, STAGES, Stage

HASHES = ROOT / "grader" / "test_hashes.json"
#: Code every stage's checks rely on: a change here changes every result.
SHARED_FILES = ("conftest.py", "pyproject.toml", "shared/testing.py", "shared/matrix.py", "shared/pytest_plugin.py",
                "shared/loader.py", "shared/registry.py", "shared/hints.py", "grader/child_plugin.py", "grader/runner.py")  # fmt: skip


def _digest(files: list[Path], root: Path = ROOT) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        rel = f.relative_to(root).as_posix()
        data = f.read_bytes().replace(b"\r\n", b"\n")  # a Windows checkout hashes the same
        h.update(rel.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


def stage_hash(stage: Stage, root: Path = ROOT) -> str:
    tests = root / stage.tests_dir.relative_to(ROOT)
    files = [p for p in tests.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return _digest(files, root)


def shared_hash(root: Path = ROOT) -> str:
    return _digest([root / f for f in SHARED_FILES if (root / f).is_file()], root)


def current(root: Path = ROOT) -> dict[str, str]:
    """The hashes of the course tests and shared checking code in the course at ``root``."""
    out = {"shared": shared_hash(root)}
    out.update({s.id: stage_hash(s, root) for s in STAGES if (root / s.tests_dir.relative_to(ROOT)).is_dir()})
    return out


def released() -> dict[str, str]:
    try:
        data = json.loads(HASHES.read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def modified(stages: list[Stage]) -> tuple[bool, list[str]]:
    """(shared code changed?, ids of the given stages whose tests changed)."""
    rel = released()
    if not rel:
        return True, [s.id for s in stages]
    shared_changed = rel.get("shared") != shared_hash()
    changed = [s.id for s in stages if s.tests_dir.is_dir() and rel.get(s.id) != stage_hash(s)]
    return shared_changed, changed


def main(argv: list[str]) -> int:
    if argv == ["--update"]:
        from grader.progress import write_atomic

        write_atomic(HASHES, json.dumps(current(), indent=2, sort_keys=True) + "\n")
        print(f"recorded the current course tests in {HASHES.relative_to(ROOT)}")
        return 0
    if argv:
        print("usage: python -m grader.integrity [--update]")
        return 2
    shared_changed, changed = modified(list(STAGES))
    if shared_changed:
        print("changed: the shared checking code (conftest.py, shared/, grader/child_plugin.py, grader/runner.py)")
    for sid in changed:
        print(f"changed: the course tests of stage {sid}")
    if not shared_changed and not changed:
        print("the course tests match the released ones")
    return 1 if shared_changed or changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
