"""The stage contract (DESIGN §3) for every stage: files, matching APIs, every solution
passes every graded check, every untouched skeleton grades as "not implemented", a
correct implementation in the skeleton's place gets full marks (also with --deps mine),
and each lesson lists the mistakes its checks recognise.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

import tests.mistakes
from grader.results import StageResult
from grader.runner import RunOptions, run_stages
from shared.registry import STAGES, Stage
from tests.util import copy_repo, fill_skeleton_with_solution, run_grader

IDS = [s.id for s in STAGES]


@pytest.fixture(scope="module")
def graded_solution() -> dict[str, StageResult]:
    results, _ = run_stages(STAGES, RunOptions(version="solution"))
    return {r.id: r for r in results}


@pytest.fixture(scope="module")
def graded_skeleton() -> dict[str, StageResult]:
    results, _ = run_stages(STAGES, RunOptions(version="skeleton"))
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
    spec = importlib.util.spec_from_file_location(name, stage.module_path(version))
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
