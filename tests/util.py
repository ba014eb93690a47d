"""Helpers for the course's own tests: a scratch copy of the repository, and running the grader in it.

**Committed skeletons.** The course's checks about the untouched skeletons (every check ends
"not implemented", skeleton and solution APIs match, ...) must hold on a learner's tree too,
where ``stages/*/skeleton/`` holds the learner's work. So they read the skeletons as committed
in ``HEAD`` (``git archive``), never the working tree's: a learner's edits cannot make the
suite fail, while a maintainer's uncommitted solutions, tests and grader are still what is
tested. A stage whose skeleton is not committed yet (a new stage) uses the working tree's.
Outside a git checkout (a downloaded zip) the working tree's skeletons are used, and the
test run's header says so in one line. ``LLMFS_TEST_SKELETONS=worktree`` forces the working
tree's skeletons (a maintainer testing an uncommitted skeleton change).
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.registry import BY_ID, ROOT, STAGES

_IGNORE = shutil.ignore_patterns(
    ".git", ".nox", ".llmfs", "__pycache__", ".pytest_cache", ".ruff_cache", "*.pyc", ".gl", ".whl",
    ".venv", "venv", "env", ".env",
)  # fmt: skip


@dataclass(frozen=True)
class SkeletonSource:
    """Where the skeleton checks read the untouched skeletons from."""

    root: Path | None  # a folder holding stages/<folder>/skeleton/ as committed; None: the working tree
    note: str  # one line for the test run's header
    committed: frozenset[str]  # ids of the stages whose skeleton came from HEAD


def _git(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=60)


def _checkout_root(repo: Path) -> Path | None:
    """The git work tree that ``repo`` is the top of, or None (not a checkout, git missing, no HEAD)."""
    try:
        top = _git("rev-parse", "--show-toplevel", cwd=repo)
        head = _git("rev-parse", "--verify", "--quiet", "HEAD", cwd=repo)
    except (OSError, subprocess.SubprocessError):
        return None
    if top.returncode or head.returncode:
        return None
    found = Path(top.stdout.decode().strip()).resolve()
    return found if found == repo.resolve() else None  # a zip unpacked inside another repository is no checkout


@functools.cache
def skeleton_source() -> SkeletonSource:
    """The committed skeletons, extracted once per test run into a temporary folder."""
    if os.environ.get("LLMFS_TEST_SKELETONS") == "worktree":
        return SkeletonSource(None, "skeleton checks: the working tree's skeletons (LLMFS_TEST_SKELETONS=worktree)", frozenset())
    if _checkout_root(ROOT) is None:
        return SkeletonSource(None, "skeleton checks: not a git checkout, so the working tree's skeletons are tested", frozenset())
    paths = [str(s.version_dir("skeleton").relative_to(ROOT).as_posix()) for s in STAGES]
    listed = _git("ls-tree", "-r", "--name-only", "HEAD", "--", *paths)
    present = {p for p in listed.stdout.decode().splitlines()}
    committed = [s for s in STAGES if f"{s.version_dir('skeleton').relative_to(ROOT).as_posix()}/{s.module}.py" in present]
    dest = Path(tempfile.mkdtemp(prefix="llmfs-committed-skeletons-"))
    atexit.register(shutil.rmtree, dest, True)
    if committed:
        archive = _git("archive", "--format=tar", "HEAD", "--",
                       *[s.version_dir("skeleton").relative_to(ROOT).as_posix() for s in committed])  # fmt: skip
        if archive.returncode:
            msg = archive.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"git archive of the committed skeletons failed: {msg}")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            try:
                tar.extractall(dest, filter="data")
            except TypeError:  # Python before 3.10.12 / 3.11.4: no extraction filters (our own archive)
                tar.extractall(dest)
    new = [s.id for s in STAGES if s not in committed]
    note = "skeleton checks: the skeletons committed in HEAD (a learner's edits do not count)"
    if new:
        note += f"; not committed yet, so from the working tree: {', '.join(new)}"
    return SkeletonSource(dest, note, frozenset(s.id for s in committed))


def skeleton_dir(stage_id: str) -> Path:
    """The folder of stage ``stage_id``'s untouched skeleton (committed, or the working tree's; see above)."""
    src = skeleton_source()
    stage = BY_ID[stage_id]
    if src.root is not None and stage_id in src.committed:
        return src.root / stage.version_dir("skeleton").relative_to(ROOT)
    return stage.version_dir("skeleton")


def skeleton_file(stage_id: str) -> Path:
    """The untouched skeleton's file of stage ``stage_id``."""
    return skeleton_dir(stage_id) / f"{BY_ID[stage_id].module}.py"


def skeleton_env(stage_ids: list[str] | None = None) -> dict[str, str]:
    """``LLMFS_IMPL_<ID>`` for each stage, pointing the loader at its untouched skeleton."""
    ids = stage_ids if stage_ids is not None else [s.id for s in STAGES]
    return {"LLMFS_IMPL_" + sid.replace(".", "_"): str(skeleton_dir(sid)) for sid in ids}


def restore_committed_skeletons(repo: Path) -> None:
    """Put the untouched skeletons into a scratch copy ``repo`` (whatever the working tree's hold)."""
    for s in STAGES:
        target = repo / s.version_dir("skeleton").relative_to(ROOT)
        source = skeleton_dir(s.id)
        if source.resolve() == target.resolve() or not source.is_dir():
            continue
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=_IGNORE)


def copy_repo(dest: Path) -> Path:
    """A copy of the working tree (no .git) at ``dest``, with the untouched skeletons; graders run there
    cannot touch the real one."""
    shutil.copytree(ROOT, dest, ignore=_IGNORE)
    restore_committed_skeletons(dest)
    return dest


def stage_file(repo: Path, stage_id: str, version: str) -> Path:
    s = BY_ID[stage_id]
    return repo / "stages" / s.folder.name / version / f"{s.module}.py"


def fill_skeleton_with_solution(repo: Path, stage_ids: list[str]) -> None:
    """What a learner who did everything right would have: the solution in the skeleton's place."""
    for sid in stage_ids:
        shutil.copyfile(stage_file(repo, sid, "solution"), stage_file(repo, sid, "skeleton"))


@dataclass
class GradeRun:
    returncode: int
    stdout: str
    stderr: str
    json: dict[str, Any] | None

    def checks(self, stage: str | None = None) -> list[dict[str, Any]]:
        assert self.json is not None, f"no JSON written; stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        return [c for s in self.json["stages"] if stage in (None, s["id"]) for c in s["checks"]]

    def statuses(self, stage: str | None = None) -> set[str]:
        return {c["status"] for c in self.checks(stage)}


def run_grader(
    repo: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
    json_out: bool = True,
) -> GradeRun:
    """``python -m grader <args> --json <tmp>`` inside ``repo`` with a private progress file."""
    out = repo / ".llmfs" / "result.json"
    if out.exists():
        out.unlink()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    full_env["LLMFS_PROGRESS"] = str(repo / ".llmfs" / "progress.json")
    full_env["PYTHONPATH"] = str(repo)
    full_env["NO_COLOR"] = "1"
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "grader", *args]
    if json_out:
        cmd += ["--json", str(out)]
    proc = subprocess.run(cmd, cwd=cwd or repo, env=full_env, capture_output=True, text=True, timeout=timeout)
    data = json.loads(out.read_text()) if json_out and out.exists() else None
    return GradeRun(proc.returncode, proc.stdout, proc.stderr, data)
