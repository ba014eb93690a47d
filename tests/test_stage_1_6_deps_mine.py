"""``--deps mine`` really grades stage 1.6 on top of the learner's own earlier stages (DESIGN §3).

In a scratch copy of the repository, the solution of 1.6 and of every stage it builds on is
copied over the skeleton (a learner who did everything right), and 1.6's checks run with
``LLMFS_VERSION=skeleton LLMFS_DEPS=mine``: all must pass. Then the same, but with stage 1.4's
skeleton left untouched: every 1.6 check must now fail as "not implemented" (NotImplementedError),
which proves that 1.6 used the learner's multi-head attention and not the reference one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from shared.registry import BY_ID, ROOT
from tests.util import restore_committed_skeletons

STAGE = BY_ID["1.6"]
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


def _closure(stage_id: str) -> list[str]:
    """The stage and every stage it builds on, directly or not."""
    out: list[str] = []
    todo = [stage_id]
    while todo:
        sid = todo.pop()
        if sid not in out:
            out.append(sid)
            todo += BY_ID[sid].deps
    return out


def _scratch_repo(dest: Path, filled: list[str]) -> Path:
    """stages/, shared/, conftest.py and pyproject.toml at ``dest``, with the solution in the skeleton's place
    for each stage in ``filled``."""
    dest.mkdir(parents=True)
    for folder in ("stages", "shared"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=_IGNORE)
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copyfile(ROOT / name, dest / name)
    restore_committed_skeletons(dest)  # the untouched skeletons, whatever a learner's tree holds
    for sid in filled:
        s = BY_ID[sid]
        rel = s.folder.relative_to(ROOT)
        shutil.copyfile(dest / rel / "solution" / f"{s.module}.py", dest / rel / "skeleton" / f"{s.module}.py")
    return dest


def _run_stage_tests(repo: Path) -> dict[str, str]:
    """Run 1.6's checks in ``repo`` as the learner's own work on the learner's own deps: nodeid -> outcome.

    The outcome is "passed", "skipped", or the failure message (e.g. "NotImplementedError: Task 1: ...").
    """
    report = repo / "report.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    env.update(LLMFS_VERSION="skeleton", LLMFS_DEPS="mine", PYTHONPATH=str(repo), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    tests = repo / STAGE.folder.relative_to(ROOT) / "tests"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "pytest_timeout", str(tests), "--junitxml", str(report)],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert report.exists(), (
        f"pytest wrote no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    )
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        node = f"{case.get('classname')}::{case.get('name')}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            outcomes[node] = problem.get("message") or "failed"
        elif case.find("skipped") is not None:
            outcomes[node] = "skipped"
        else:
            outcomes[node] = "passed"
    assert outcomes, f"no checks ran:\n{proc.stdout[-3000:]}"
    return outcomes


@pytest.mark.slow
def test_deps_mine_uses_the_learners_earlier_stages(tmp_path: Path) -> None:
    everything = _closure("1.6")  # 1.6, 1.1, 1.4, 1.5a, 1.5b (and 1.3, which 1.4 builds on)

    outcomes = _run_stage_tests(_scratch_repo(tmp_path / "all-mine", everything))
    bad = {k: v for k, v in outcomes.items() if v not in ("passed", "skipped")}
    assert not bad, f"with every stage done right, 1.6 must pass with --deps mine; failing: {bad}"
    assert "passed" in outcomes.values()

    outcomes = _run_stage_tests(_scratch_repo(tmp_path / "no-1.4", [s for s in everything if s != "1.4"]))
    ran = {k: v for k, v in outcomes.items() if v != "skipped"}
    wrong = {k: v for k, v in ran.items() if "NotImplementedError" not in v}
    assert ran and not wrong, (
        "with stage 1.4 untouched, every 1.6 check must fail as not implemented (it is built on your"
        f" MultiHeadAttention); these did not: {wrong}"
    )
