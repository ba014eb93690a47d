"""Realistic mistakes fail grading with a hint that names them, and nothing else (DESIGN §5, issue 11).

Two catalogues, graded per stage in one process (``tests/mistake_runner.py``) through the
loader's ``LLMFS_IMPL_<stage>`` override, the path by which the grader reads a learner's file,
with the grader's own outcome classification and hint reconciliation:

* ``tests/mistakes/stage_*.py``: a snippet of the solution and the mistaken version of it;
* ``tests/mistakes/learners/stage_*/*.py``: complete learner files, each a mistake or correct
  code in another style (``tests/mistakes/learner_files.py``).

For each mistake: some check fails (not as "not implemented"), some "Likely mistake" line
names it, and no "Likely mistake" line names only something else. Each correct file gets
full marks. ``python -m tests.test_mistakes`` prints the figures (caught / named correctly /
named wrongly / correct files with full marks).
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
from tests.mistakes.learner_files import LearnerFile, learner_files

LIKELY = "Likely mistake:"


def _all() -> list[Mistake]:
    out: list[Mistake] = []
    for info in sorted(pkgutil.iter_modules(tests.mistakes.__path__), key=lambda i: i.name):
        if info.name.startswith("stage_"):
            out += importlib.import_module(f"tests.mistakes.{info.name}").MISTAKES
    return out


MISTAKES = _all()
FILES = learner_files()
BAD_FILES = [f for f in FILES if f.mistake]
GOOD_FILES = [f for f in FILES if not f.mistake]


@cache
def _graded(stage_id: str, tmp: str) -> dict[str, Any]:
    out = Path(tmp) / f"mistakes-{stage_id}.json"
    if out.exists() and __name__ == "__main__":
        return json.loads(out.read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.mistake_runner", stage_id, str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0 and out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("mistakes"))


def named_lines(checks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(check, the text after "Likely mistake:") for every naming line of the failing checks."""
    out = []
    for c in checks:
        if c["status"] in ("passed", "skipped"):
            continue
        for line in c["hint"].splitlines():
            if LIKELY in line:
                out.append((c["name"], line.split(LIKELY, 1)[1].strip()))
    return out


def verdict(checks: list[dict[str, Any]], expect: str) -> dict[str, bool]:
    """caught: some check fails; named: some failing hint has ``expect``; wrong: some "Likely mistake" line lacks it."""
    failing = [c for c in checks if c["status"] not in ("passed", "skipped")]
    lines = named_lines(checks)
    e = expect.lower()
    return {
        "caught": bool(failing) and all(c["status"] != "not implemented" for c in failing),
        "named": any(e in c["hint"].lower() for c in failing),
        "wrong": any(e not in text.lower() for _, text in lines),
    }


def _explain(checks: list[dict[str, Any]]) -> str:
    return "\n".join(f"- [{c['status']}] {c['name']}: {c['hint'][:600]}" for c in checks if c["status"] not in ("passed", "skipped"))


def _assert_named(checks: list[dict[str, Any]], name: str, expect: str) -> None:
    assert checks, f"no checks ran for {name!r}"
    v = verdict(checks, expect)
    assert v["caught"], f"no check fails (or only 'not implemented') when the learner makes the mistake {name!r}:\n" + _explain(checks)
    assert v["named"], f"no failing check names the mistake {name!r} (looked for {expect!r}); hints were:\n" + _explain(checks)
    wrong = [f"{n}: {t}" for n, t in named_lines(checks) if expect.lower() not in t.lower()]
    assert not wrong, f"a hint names a mistake that {name!r} does not contain:\n" + "\n".join(wrong)


@pytest.mark.parametrize("m", MISTAKES, ids=[f"{m.stage}: {m.name}" for m in MISTAKES])
def test_named_mistake_is_caught_and_named(m: Mistake, scratch: str) -> None:
    result = _graded(m.stage, scratch)[m.name]
    assert "error" not in result, result.get("error")
    _assert_named(result["checks"], m.name, m.hint)


@pytest.mark.parametrize("f", BAD_FILES, ids=[f.id for f in BAD_FILES])
def test_learner_mistake_is_caught_and_named(f: LearnerFile, scratch: str) -> None:
    assert f.expect, f"{f.path}: a mistake file needs an 'expect:' line"
    _assert_named(_graded(f.stage, scratch)[f.key]["checks"], f.mistake, f.expect)


@pytest.mark.parametrize("f", GOOD_FILES, ids=[f.id for f in GOOD_FILES])
def test_correct_variant_gets_full_marks(f: LearnerFile, scratch: str) -> None:
    assert f.correct, f"{f.path}: a file needs a 'mistake:' or a 'correct:' line"
    checks = _graded(f.stage, scratch)[f.key]["checks"]
    bad = [c for c in checks if c["status"] not in ("passed", "skipped")]
    assert checks and not bad, f"correct code ({f.correct}) lost points:\n" + _explain(checks)


def test_mistake_names_are_unique_per_stage() -> None:
    seen = [(m.stage, m.name) for m in MISTAKES]
    assert len(seen) == len(set(seen))


def figures(tmp: str, stages: list[str] | None = None) -> dict[str, int]:
    """The issue's figures over both catalogues (of ``stages``, default all)."""
    n = {"mistakes": 0, "caught": 0, "named correctly": 0, "named wrongly": 0, "correct files": 0, "full marks": 0}
    for stage in sorted({m.stage for m in MISTAKES} | {f.stage for f in FILES}):
        if stages and stage not in stages:
            continue
        graded = _graded(stage, tmp)
        items = [(m.name, m.hint) for m in MISTAKES if m.stage == stage] + [(f.key, f.expect) for f in BAD_FILES if f.stage == stage]
        for key, expect in items:
            checks = graded.get(key, {}).get("checks", [])
            v = verdict(checks, expect)
            n["mistakes"] += 1
            n["caught"] += v["caught"]
            n["named correctly"] += v["caught"] and v["named"]
            n["named wrongly"] += v["wrong"]
            if v["wrong"] or not v["named"]:
                print(f"  {stage} {key}: caught={v['caught']} named={v['named']} wrong={v['wrong']}", file=sys.stderr)
        for f in (f for f in GOOD_FILES if f.stage == stage):
            checks = graded.get(f.key, {}).get("checks", [])
            n["correct files"] += 1
            ok = bool(checks) and all(c["status"] in ("passed", "skipped") for c in checks)
            n["full marks"] += ok
            if not ok:
                print(f"  {stage} {f.key}: correct file lost points", file=sys.stderr)
    return n


if __name__ == "__main__":
    # python -m tests.test_mistakes [DIR [STAGE...]]: DIR keeps each stage's graded JSON (reused when present).
    import tempfile

    if len(sys.argv) > 1:
        Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
        print(json.dumps(figures(sys.argv[1], sys.argv[2:] or None), indent=1))
    else:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(figures(d), indent=1))
