"""Helpers for the course's own tests: a scratch copy of the repository, and running the grader in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.registry import BY_ID, ROOT

_IGNORE = shutil.ignore_patterns(".git", ".nox", ".llmfs", "__pycache__", ".pytest_cache", ".ruff_cache", "*.pyc", ".gl", ".whl")


def copy_repo(dest: Path) -> Path:
    """A copy of the working tree (no .git) at ``dest``; graders run there cannot touch the real one."""
    shutil.copytree(ROOT, dest, ignore=_IGNORE)
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
