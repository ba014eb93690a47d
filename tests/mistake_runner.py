"""Grade many mutated copies of one stage's solution in a single process (torch imported once).

Used by ``tests/test_mistakes.py``: ``python -m tests.mistake_runner <stage> <out.json>``.
For each Mistake of the stage it writes the mutated solution to a temp folder, points
the loader at it (``LLMFS_IMPL_<stage>``), clears the loader's cache and runs the stage's
checks with ``pytest.main``, classifying outcomes exactly as the grader's child plugin does.
Realistic mistakes are ordinary wrong math, so one process can safely grade them all;
the hostile cases (exits, crashes, hangs) are the grader's business, tested elsewhere.
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
from shared.registry import BY_ID, ROOT
from tests.test_mistakes import MISTAKES


class _Collector:
    def __init__(self) -> None:
        self.results: dict[str, dict[str, str]] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[Any]):  # type: ignore[no-untyped-def]
        outcome = yield
        report = outcome.get_result()
        rec = self.results.setdefault(item.nodeid, {"name": _check_name(item), "status": "passed", "hint": ""})
        if report.skipped:
            rec["status"] = "skipped"
        elif report.failed and rec["status"] == "passed" and call.excinfo is not None:
            rec["status"], rec["hint"] = _classify(call.excinfo)


def main(stage_id: str, out_path: str) -> int:
    stage = BY_ID[stage_id]
    source = stage.module_path("solution").read_text(encoding="utf-8")
    env_key = "LLMFS_IMPL_" + stage_id.replace(".", "_")
    os.environ["LLMFS_VERSION"] = "solution"
    out: dict[str, Any] = {}
    for m in (m for m in MISTAKES if m.stage == stage_id):
        key = m.name
        if source.count(m.old) != 1:
            out[key] = {"error": f"snippet occurs {source.count(m.old)} times in the solution (must be exactly once)"}
            continue
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, f"{stage.module}.py").write_text(source.replace(m.old, m.new), encoding="utf-8")
            os.environ[env_key] = tmp
            loader._cache.clear()
            for name in [n for n in sys.modules if n.startswith("llmfs_stage_")]:
                del sys.modules[name]
            collector = _Collector()
            args = [str(stage.tests_dir), "-q", "-p", "no:cacheprovider", "--tb=no", "-rN", "--no-header",
                    "-p", "no:unraisableexception", "-p", "no:threadexception",
                    "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")]  # fmt: skip
            if m.check:
                args += ["-k", m.check]
            pytest.main(args, plugins=[collector])
            out[key] = {"checks": list(collector.results.values())}
    Path(out_path).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
