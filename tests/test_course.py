"""The stage contract (DESIGN §3) for every stage: files, matching APIs, every solution
passes every graded check, every untouched skeleton grades as "not implemented", a
correct implementation in the skeleton's place gets full marks (also with --deps mine),
and each lesson lists the mistakes its checks recognise.

"Untouched skeleton" means the one committed in HEAD (``tests.util.skeleton_source``), so
the suite passes on a learner's tree; the solutions, tests and grader are the working tree's.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import tests.mistakes
from grader.results import StageResult
from grader.runner import RunOptions, run_stages
from shared.registry import ROOT, STAGES, Stage
from tests.util import copy_repo, fill_skeleton_with_solution, run_grader, skeleton_env, skeleton_file, stage_file

IDS = [s.id for s in STAGES]


@pytest.fixture(scope="module")
def graded_solution() -> dict[str, StageResult]:
    results, _ = run_stages(STAGES, RunOptions(version="solution"))
    return {r.id: r for r in results}


@pytest.fixture(scope="module")
def graded_skeleton() -> dict[str, StageResult]:
    results, _ = run_stages(STAGES, RunOptions(version="skeleton", env=skeleton_env()))
    return {r.id: r for r in results}


def _describe(r: StageResult) -> str:
    bad = [f"  {c.status}: {c.name}: {c.hint[:300]}" for c in r.checks if c.status not in ("passed", "skipped")]
    return (r.error + "\n" if r.error else "") + "\n".join(bad)


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_stage_folder_has_every_part(stage: Stage) -> None:
    for part in ("README.md", f"skeleton/{stage.module}.py", f"solution/{stage.module}.py"):
        assert (stage.folder / part).is_file(), f"{stage.folder.name} lacks {part}"
    assert list(stage.tests_dir.glob("test_*.py")), f"{stage.folder.name}/tests has no test_*.py"


def _load(stage: Stage, version: str) -> ModuleType:
    name = f"course_api_{stage.id.replace('.', '_')}_{version}"
    path = skeleton_file(stage.id) if version == "skeleton" else stage.module_path(version)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)  # the untouched skeleton must import cleanly
    return module


def _public(module: ModuleType) -> dict[str, object]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]
    return {n: getattr(module, n) for n in names}


def _signatures(obj: object) -> dict[str, str]:
    if inspect.isclass(obj):
        out = {}
        for name, member in vars(obj).items():
            if callable(member) and (not name.startswith("_") or name in ("__init__", "__call__")):
                out[name] = str(inspect.signature(member))
        return out
    if callable(obj):
        return {"": str(inspect.signature(obj))}
    return {"": type(obj).__name__}


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_skeleton_and_solution_share_the_public_api(stage: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMFS_DEPS", "solution")
    skeleton, solution = _public(_load(stage, "skeleton")), _public(_load(stage, "solution"))
    assert sorted(skeleton) == sorted(solution), f"public names differ: skeleton {sorted(skeleton)} vs solution {sorted(solution)}"
    for name in solution:
        assert _signatures(skeleton[name]) == _signatures(solution[name]), f"{stage.id}: {name} signatures differ"


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_solution_passes_every_check(stage: Stage, graded_solution: dict[str, StageResult]) -> None:
    r = graded_solution[stage.id]
    assert r.checks, f"stage {stage.id} has no checks: {r.error}"
    assert r.passed, _describe(r)
    assert any(c.status == "passed" for c in r.checks)


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_untouched_skeleton_is_not_implemented_everywhere(stage: Stage, graded_skeleton: dict[str, StageResult]) -> None:
    r = graded_skeleton[stage.id]
    assert r.checks and not r.error, r.error
    wrong = [f"{c.status}: {c.name} ({c.hint[:200]})" for c in r.checks if c.status not in ("not implemented", "skipped")]
    assert not wrong, "every graded check must end 'not implemented' on the untouched skeleton:\n" + "\n".join(wrong)
    assert r.status == "not started"


@pytest.mark.slow
def test_correct_code_in_the_skeleton_gets_full_marks_with_deps_mine(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    fill_skeleton_with_solution(repo, IDS)
    run = run_grader(repo, "all", "--deps", "mine", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    total = run.json["total"]
    assert total["points"] == total["max_points"] > 0 and total["stages_passed"] == len(STAGES)


def _mistakes_by_stage() -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for info in pkgutil.iter_modules(tests.mistakes.__path__):
        module = importlib.import_module(f"tests.mistakes.{info.name}")
        for m in getattr(module, "MISTAKES", []):
            out.setdefault(m.stage, []).append(m)
    return out


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_lesson_lists_the_mistakes_its_checks_recognise(stage: Stage) -> None:
    mistakes = _mistakes_by_stage().get(stage.id, [])
    assert mistakes, f"stage {stage.id} has no named mistakes in tests/mistakes/"
    lesson = (stage.folder / "README.md").read_text(encoding="utf-8").lower()
    missing = [m.hint for m in mistakes if m.hint.lower() not in lesson]
    assert not missing, f"{stage.folder.name}/README.md does not name these mistakes its checks recognise: {missing}"


# ----------------------------------------------------------------------------- a learner's tree

_SKELETON_CHECKS = [
    "tests/test_course.py::test_untouched_skeleton_is_not_implemented_everywhere",
    "tests/test_course.py::test_skeleton_and_solution_share_the_public_api",
    "tests/test_bench.py::test_bench_on_the_untouched_skeleton_says_not_implemented",
    "tests/test_grader.py::test_untouched_skeleton_not_implemented_exit_1",
]


def _pytest_in(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    full.update(PYTHONPATH=str(repo), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", NO_COLOR="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "pytest_timeout", *args],
                          cwd=repo, env=full, capture_output=True, text=True, timeout=600)  # fmt: skip


def _learner_edits(repo: Path) -> None:
    """What a learner's tree looks like a few stages in: one stage done, one half done, one with a helper."""
    fill_skeleton_with_solution(repo, ["1.1", "1.3"])  # done (1.3 is what 1.4 builds on with --deps mine)
    half = stage_file(repo, "1.4", "skeleton")
    text = half.read_text(encoding="utf-8")
    first_raise = text.index("raise NotImplementedError")
    half.write_text(text[:first_raise] + "pass  # my work in progress\n" + " " * 8 + text[first_raise:], encoding="utf-8")
    helper = stage_file(repo, "1.2", "skeleton")
    helper.write_text(helper.read_text(encoding="utf-8") + "\n\ndef my_helper(x):\n    return x\n", encoding="utf-8")


@pytest.mark.slow
def test_skeleton_checks_pass_on_a_learners_tree(tmp_path: Path) -> None:
    """A scratch clone at HEAD with this working tree's files on top, then a learner's edits to several skeletons:
    the skeleton checks use the committed skeletons and pass; forced onto the working tree's, they fail."""
    if _git_head(ROOT) is None:
        pytest.skip("not a git checkout")
    repo = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(repo)], check=True, capture_output=True, timeout=120)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "--detach", _git_head(ROOT)], check=True, capture_output=True, timeout=120)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True, timeout=60).stdout.decode()  # fmt: skip
    for rel in filter(None, listed.split("\0")):  # the maintainer's uncommitted work travels: it is what is tested
        src = ROOT / rel
        if src.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, repo / rel)
    for s in STAGES:  # ... but the skeletons are the committed ones, then the learner edits them
        committed = skeleton_file(s.id)
        shutil.copyfile(committed, stage_file(repo, s.id, "skeleton"))
    _learner_edits(repo)

    run = _pytest_in(repo, *_SKELETON_CHECKS)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "skeletons committed in HEAD" in run.stdout

    forced = _pytest_in(repo, *_SKELETON_CHECKS, "-x", env={"LLMFS_TEST_SKELETONS": "worktree"})
    assert forced.returncode == 1, "the learner's edits should fail the checks when the working tree is graded:\n" + forced.stdout[-3000:]


def test_outside_a_git_checkout_the_working_tree_is_tested_and_said_so(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "unzipped")  # no .git: a downloaded zip
    run = _pytest_in(repo, "tests/test_course.py::test_stage_folder_has_every_part[1.1]")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    lines = [ln for ln in run.stdout.splitlines() if "skeleton checks:" in ln]
    assert lines == ["skeleton checks: not a git checkout, so the working tree's skeletons are tested"], run.stdout[:2000]


def _git_head(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
