"""Grade many learner files of one stage in a single process (torch imported once).

Used by ``tests/test_mistakes.py``: ``python -m tests.mistake_runner <stage> <out.json>``.
It grades, for the stage:

* each ``Mistake`` of ``tests/mistakes/stage_*.py`` (an edit of the solution), and
* each complete learner file in ``tests/mistakes/learners/stage_<id>/`` (see ``tests/mistakes/learner_files.py``),

writing the file to a temp folder, pointing the loader at it (``LLMFS_IMPL_<stage>``),
clearing the loader's cache and running the stage's checks with ``pytest.main``. Outcomes
are classified exactly as the grader's child plugin does, and the hints reconciled as the
grader does (``shared.hints.reconcile``). Realistic mistakes are ordinary wrong math, so one
process can safely grade them all; the hostile cases (exits, crashes, hangs) are the
grader's business, tested elsewhere.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from grader.child_plugin import _check_name, _classify
from shared import loader
from shared.hints import reconcile_dicts
from shared.registry import BY_ID, ROOT
from tests.mistakes.learner_files import learner_files
from tests.test_mistakes import MISTAKES


class _Collector:
    def __init__(self, stage_id: str) -> None:
        self.stage_id = stage_id
        self.results: dict[str, dict[str, str]] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[Any]):  # type: ignore[no-untyped-def]
        outcome = yield
        report = outcome.get_result()
        rec = self.results.setdefault(
            item.nodeid, {"nodeid": item.nodeid, "name": _check_name(item), "status": "passed", "hint": ""}
        )
        if report.skipped:
            rec["status"] = "skipped"
        elif report.failed and rec["status"] == "passed" and call.excinfo is not None:
            rec["status"], rec["hint"] = _classify(call.excinfo, self.stage_id)


def _point_loader_at(stage_id: str, folder: str | None) -> None:
    """The loader reads its settings once, at import (learner code cannot change them): update them here."""
    settings = getattr(loader, "_SETTINGS", None)
    if isinstance(settings, dict):
        settings["version"] = "solution"
        settings["impl"] = {stage_id.replace(".", "_"): folder} if folder else {}


def _grade(stage_id: str, source: str, check: str = "") -> dict[str, Any]:
    stage = BY_ID[stage_id]
    env_key = "LLMFS_IMPL_" + stage_id.replace(".", "_")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, f"{stage.module}.py").write_text(source, encoding="utf-8")
        os.environ[env_key] = tmp
        _point_loader_at(stage_id, tmp)
        loader._cache.clear()
        for name in [n for n in sys.modules if n.startswith("llmfs_stage_")]:
            del sys.modules[name]
        collector = _Collector(stage_id)
        args = [str(stage.tests_dir), "-q", "-p", "no:cacheprovider", "--tb=no", "-rN", "--no-header",
                "-p", "no:unraisableexception", "-p", "no:threadexception",
                "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")]  # fmt: skip
        if check:
            args += ["-k", check]
        pytest.main(args, plugins=[collector])
        os.environ.pop(env_key, None)
        _point_loader_at(stage_id, None)
    checks = list(collector.results.values())
    reconcile_dicts(checks, ROOT)
    return {"checks": checks}


def main(stage_id: str, out_path: str) -> int:
    stage = BY_ID[stage_id]
    source = stage.module_path("solution").read_text(encoding="utf-8")
    os.environ["LLMFS_VERSION"] = "solution"
    out: dict[str, Any] = {}
    for m in (m for m in MISTAKES if m.stage == stage_id):
        if source.count(m.old) != 1:
            out[m.name] = {"error": f"snippet occurs {source.count(m.old)} times in the solution (must be exactly once)"}
            continue
        out[m.name] = _grade(stage_id, source.replace(m.old, m.new), m.check)
    for f in learner_files(stage_id):
        out[f.key] = _grade(stage_id, f.path.read_text(encoding="utf-8"), f.check)
    tmp = Path(out_path).with_suffix(".part")
    tmp.write_text(json.dumps(out, indent=1), encoding="utf-8")
    os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
