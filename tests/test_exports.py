"""Instructor-facing outputs (issue: the grader at class scale): --json, --junit and --gradescope
validated against their schemas, the Gradescope run_autograder recipe, batch grading with a
summary CSV, --submission, and the course-test integrity hashes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader import integrity
from shared.registry import ROOT
from tests.util import copy_repo, run_grader, stage_file

SCHEMAS = ROOT / "grader" / "schemas"
SOLUTION = stage_file(ROOT, "1.1", "solution").read_text()


def every_status_learner() -> str:
    """A 1.1 file whose checks end in every status: passed, failed, not implemented, timed out, crashed."""
    s = SOLUTION
    s = s.replace("        return self.embedding(ids) * math.sqrt(self.d_model)", "        import os\n        os._exit(3)")
    s = s.replace(
        '            raise ValueError(f"sequence length {T} exceeds max_len={self.max_len}: no learned row for those positions")',
        "            while True:\n                pass",
    )
    s = s.replace(
        '        self.register_buffer("pe", sinusoidal_table(max_len, d_model))  # (max_len, d_model)',
        '        self.pe = nn.Parameter(sinusoidal_table(max_len, d_model))',
    )
    s = s.replace("        T = x.size(1)\n        if T > self.max_len:\n            raise ValueError(f\"sequence length {T} exceeds max_len={self.max_len} of",
                  "        raise NotImplementedError('Task 2')\n        T = x.size(1)\n        if T > self.max_len:\n            raise ValueError(f\"sequence length {T} exceeds max_len={self.max_len} of")  # fmt: skip
    return s


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    repo = copy_repo(tmp_path_factory.mktemp("exports") / "repo")
    stage_file(repo, "1.1", "skeleton").write_text(every_status_learner())
    out = repo / ".llmfs"
    out.mkdir(exist_ok=True)
    run = run_grader(
        repo, "1.1", "--timeout", "2", "--junit", str(out / "junit.xml"), "--gradescope", str(out / "results.json"),
        "--visibility", "after_due_date",
    )  # fmt: skip
    return repo, run


def test_mixed_run_covers_every_status(mixed) -> None:  # type: ignore[no-untyped-def]
    _, run = mixed
    assert run.returncode == 1
    assert run.statuses("1.1") == {"passed", "failed", "not implemented", "timed out", "crashed", "skipped"}, [
        (c["name"], c["status"]) for c in run.checks()
    ]


def test_json_matches_its_schema(mixed) -> None:  # type: ignore[no-untyped-def]
    jsonschema = pytest.importorskip("jsonschema", reason="pip install -r requirements-dev.txt")
    _, run = mixed
    jsonschema.validate(run.json, json.loads((SCHEMAS / "results.schema.json").read_text()))
    stage = run.json["stages"][0]
    assert stage["points"] == sum(c["points"] for c in stage["checks"])
    assert stage["max_points"] == sum(c["max_points"] for c in stage["checks"] if c["status"] != "skipped")


def test_junit_matches_its_schema_and_counts(mixed) -> None:  # type: ignore[no-untyped-def]
    xmlschema = pytest.importorskip("xmlschema", reason="pip install -r requirements-dev.txt")
    repo, run = mixed
    path = repo / ".llmfs" / "junit.xml"
    xmlschema.XMLSchema(str(SCHEMAS / "junit.xsd")).validate(str(path))
    import xml.etree.ElementTree as ET

    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    checks = run.checks()
    assert int(suite.get("tests")) == len(checks)
    assert int(suite.get("failures")) == sum(c["status"] in ("failed", "not implemented") for c in checks)
    assert int(suite.get("errors")) == sum(c["status"] in ("timed out", "crashed") for c in checks)
    assert int(suite.get("skipped")) == sum(c["status"] == "skipped" for c in checks)


def test_gradescope_matches_its_schema(mixed) -> None:  # type: ignore[no-untyped-def]
    jsonschema = pytest.importorskip("jsonschema", reason="pip install -r requirements-dev.txt")
    repo, run = mixed
    doc = json.loads((repo / ".llmfs" / "results.json").read_text())
    jsonschema.validate(doc, json.loads((SCHEMAS / "gradescope.schema.json").read_text()))
    graded = [c for c in run.checks() if c["status"] != "skipped"]
    assert len(doc["tests"]) == len(graded)
    assert doc["score"] == sum(c["points"] for c in graded) == sum(t["score"] for t in doc["tests"])
    assert {t["visibility"] for t in doc["tests"]} == {"after_due_date"}
    failed = [t for t in doc["tests"] if t["status"] == "failed"]
    assert failed and all(t["output"] for t in failed), "a failed test must carry its hint"


def test_gradescope_run_autograder_recipe(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="pip install -r requirements-dev.txt")
    ag = tmp_path / "autograder"
    copy_repo(ag / "source")
    (ag / "submission").mkdir(parents=True)
    shutil.copy(stage_file(ROOT, "1.1", "solution"), ag / "submission" / "positional.py")  # a flat submission
    env = {**os.environ, "AUTOGRADER": str(ag), "PYTHON": sys.executable, "STAGES": "1.1"}
    proc = subprocess.run(["bash", str(ROOT / "grader/gradescope/run_autograder")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((ag / "results" / "results.json").read_text())
    jsonschema.validate(doc, json.loads((SCHEMAS / "gradescope.schema.json").read_text()))
    assert doc["score"] == sum(t["max_score"] for t in doc["tests"]) > 0


def test_batch_grading_writes_a_summary_csv(tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    good = subs / "ada" / "stages" / "1.1-positional-embeddings" / "skeleton"
    good.mkdir(parents=True)
    shutil.copy(stage_file(ROOT, "1.1", "solution"), good / "positional.py")  # a checkout layout
    (subs / "bob").mkdir()
    (subs / "bob" / "positional.py").write_text("def broken(:\n")  # a flat folder with a syntax error
    (subs / "cy").mkdir()  # nothing handed in
    out = tmp_path / "summary.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "grader.batch", str(subs), "1.1", "--csv", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["submission"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"ada", "bob", "cy"}
    assert rows["ada"]["1.1 status"] == "passed" and rows["ada"]["total points"] == rows["ada"]["total max"]
    assert rows["bob"]["1.1 status"] != "passed" and float(rows["bob"]["total points"]) == 0
    assert rows["cy"]["1.1 status"] != "passed" and float(rows["cy"]["total points"]) == 0


def test_submission_must_exist(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    run = run_grader(repo, "1.1", "--submission", str(tmp_path / "nope"), json_out=False)
    assert run.returncode == 2 and len((run.stdout + run.stderr).strip().splitlines()) == 1


def test_released_hashes_match_the_course_tests() -> None:
    stale = [k for k, v in integrity.current().items() if integrity.released().get(k) != v]
    assert not stale, f"course tests changed without updating the hashes ({stale}): run `python -m grader.integrity --update`"


def test_changed_course_tests_are_reported(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    shutil.copy(stage_file(ROOT, "1.1", "solution"), stage_file(repo, "1.1", "skeleton"))
    test_file = next((repo / "stages/1.1-positional-embeddings/tests").glob("test_*.py"))
    test_file.write_text(test_file.read_text() + "\n# a learner was here\n")
    run = run_grader(repo, "1.1", "-k", "odd_d_model")
    assert "course tests of stage 1.1 were changed" in run.stdout
    assert run.json["stages"][0]["tests_modified"] is True
