"""Each named mistake, applied to the reference solution, fails grading with a hint that names it (DESIGN §5).

The catalogue is in ``tests/mistakes/stage_*.py``: an exact snippet of the solution and the
mistaken version a learner would write. Each stage's mistakes are graded in one process
(``tests/mistake_runner.py``) through the loader's ``LLMFS_IMPL_<stage>`` override, the same
path by which the grader reads a learner's file, with the grader's own outcome classification.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import tests.mistakes
from shared.registry import ROOT
from tests.mistakes import Mistake


def _all() -> list[Mistake]:
    out: list[Mistake] = []
    for info in sorted(pkgutil.iter_modules(tests.mistakes.__path__), key=lambda i: i.name):
        out += importlib.import_module(f"tests.mistakes.{info.name}").MISTAKES
    return out


MISTAKES = _all()


@cache
def _graded(stage_id: str, tmp: str) -> dict[str, Any]:
    out = Path(tmp) / f"mistakes-{stage_id}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.mistake_runner", stage_id, str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0 and out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("mistakes"))


@pytest.mark.parametrize("m", MISTAKES, ids=[f"{m.stage}: {m.name}" for m in MISTAKES])
def test_named_mistake_is_caught_and_named(m: Mistake, scratch: str) -> None:
    result = _graded(m.stage, scratch)[m.name]
    assert "error" not in result, result.get("error")
    checks = result["checks"]
    assert checks, f"no checks ran for {m.name!r} (check -k {m.check!r})"
    failing = [c for c in checks if c["status"] not in ("passed", "skipped")]
    assert failing, f"no check fails when the learner makes the mistake {m.name!r}"
    assert all(c["status"] != "not implemented" for c in failing)
    assert any(m.hint.lower() in c["hint"].lower() for c in failing), (
        f"no failing check names the mistake {m.name!r} (looked for {m.hint!r}); hints were:\n"
        + "\n".join(f"- {c['name']}: {c['hint'][:400]}" for c in failing)
    )


def test_mistake_names_are_unique_per_stage() -> None:
    seen = [(m.stage, m.name) for m in MISTAKES]
    assert len(seen) == len(set(seen))
