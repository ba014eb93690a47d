"""Machine-readable results for instructors: JUnit XML and Gradescope's results.json. No torch.

Schemas (validated by the course tests):
  grader/schemas/results.schema.json     ``--json``        this grader's own format
  grader/schemas/junit.xsd               ``--junit``       the JUnit XML subset CI systems read
  grader/schemas/gradescope.schema.json  ``--gradescope``  Gradescope autograder results.json
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

from grader.results import CheckResult, StageResult

GRADESCOPE_VISIBILITY = ("visible", "hidden", "after_due_date", "after_published")


def _check_output(c: CheckResult) -> str:
    if c.status == "passed":
        return ""
    if c.status == "skipped":
        return f"skipped: {c.hint}"
    return f"{c.status}: {c.hint}".strip()


def junit_xml(results: Sequence[StageResult], version: str) -> str:
    """One <testsuite> per stage, one <testcase> per check.

    failed / not implemented -> <failure>; timed out / crashed -> <error>; skipped -> <skipped>.
    """
    suites = ET.Element("testsuites", name=f"llm-from-scratch ({version})")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for r in results:
        counts = {
            "tests": len(r.checks),
            "failures": r.count("failed") + r.count("not implemented"),
            "errors": r.count("timed out") + r.count("crashed") + (1 if r.error else 0),
            "skipped": r.count("skipped"),
        }
        suite = ET.SubElement(
            suites, "testsuite", name=f"stage {r.id}: {r.title}", time=f"{r.duration:.3f}",
            **{k: str(v) for k, v in counts.items()},
        )  # fmt: skip
        if r.error:
            case = ET.SubElement(suite, "testcase", classname=f"stage_{r.id}", name="stage could not be graded", time="0")
            ET.SubElement(case, "error", message=r.error[:200], type="stage error").text = r.error
            counts["tests"] += 1
            suite.set("tests", str(counts["tests"]))
        for c in r.checks:
            case = ET.SubElement(suite, "testcase", classname=f"stage_{r.id}", name=c.name, time=f"{c.duration:.3f}")
            first = c.hint.strip().splitlines()[0][:200] if c.hint.strip() else c.status
            if c.status in ("failed", "not implemented"):
                ET.SubElement(case, "failure", message=first, type=c.status).text = c.hint
            elif c.status in ("timed out", "crashed"):
                ET.SubElement(case, "error", message=first, type=c.status).text = c.hint
            elif c.status == "skipped":
                ET.SubElement(case, "skipped", message=c.hint or "skipped")
        for k in totals:
            totals[k] += counts[k]
        total_time += r.duration
    for k, v in totals.items():
        suites.set(k, str(v))
    suites.set("time", f"{total_time:.3f}")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def gradescope_json(
    results: Sequence[StageResult], *, visibility: str = "visible", execution_time: float = 0.0, summary: str = ""
) -> dict[str, Any]:
    """Gradescope's results.json: one test per graded check (skipped checks are left out), scores in points."""
    tests: list[dict[str, Any]] = []
    for r in results:
        if r.error:
            tests.append(
                {"name": f"Stage {r.id}: could not be graded", "number": r.id, "score": 0.0, "max_score": 0.0,
                 "status": "failed", "output": r.error, "tags": [f"stage-{r.id}"], "visibility": visibility}
            )  # fmt: skip
        for i, c in enumerate(c for c in r.checks if c.graded):
            tests.append(
                {
                    "name": f"[{r.id}] {c.name}",
                    "number": f"{r.id}.{i + 1}",
                    "score": c.points,
                    "max_score": c.max_points,
                    "status": "passed" if c.status == "passed" else "failed",
                    "output": _check_output(c),
                    "tags": [f"stage-{r.id}", c.status.replace(" ", "-")],
                    "visibility": visibility,
                }
            )
    return {
        "score": sum(r.points for r in results),
        "execution_time": round(execution_time, 3),
        "output": summary,
        "output_format": "text",
        "test_output_format": "text",
        "visibility": visibility,
        "stdout_visibility": "hidden",
        "tests": tests,
    }
