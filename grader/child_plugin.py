"""pytest plugin loaded inside the grader's child process (``-p grader.child_plugin``).

It appends one JSON object per line to the file named by ``LLMFS_EVENTS``, flushed
as it goes, so whatever the learner's code does to the process (hang, exit, crash)
the grader still knows what finished and what was running:

    {"event": "env", ...}                       devices and autocast dtypes
    {"event": "collected", "items": [...]}      every check: nodeid, stage, name, points, timeout
    {"event": "collect-error", "path", "hint"}  a test file that could not be collected
    {"event": "start", "nodeid", "timeout"}     a check began
    {"event": "result", "nodeid", "status", "hint", "duration"}

A check with no "result" line did not finish: the grader reports it as crashed or
timed out, never as passed.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from shared.registry import ROOT, stage_of_path

_EVENTS = os.environ.get("LLMFS_EVENTS")
_OVERRIDE_TIMEOUT = os.environ.get("LLMFS_TIMEOUT")  # the grader's --timeout: wins over every marker
_reports: dict[str, dict[str, Any]] = {}


def _emit(**fields: Any) -> None:
    if not _EVENTS:
        return
    line = json.dumps(fields, default=str)
    with open(_EVENTS, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()


def _check_name(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    first = doc.strip().splitlines()[0].strip() if doc.strip() else item.name.split("[")[0].removeprefix("test_").replace("_", " ")
    callspec = getattr(item, "callspec", None)
    return f"{first} [{callspec.id}]" if callspec is not None else first


def _timeout_of(item: pytest.Item) -> float | None:
    marker = item.get_closest_marker("timeout")
    if marker and marker.args:
        return float(marker.args[0])
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        stage = stage_of_path(item.path)
        if _OVERRIDE_TIMEOUT:
            item.add_marker(pytest.mark.timeout(float(_OVERRIDE_TIMEOUT)), append=False)
        elif stage is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(stage.check_timeout))


def pytest_collection_finish(session: pytest.Session) -> None:
    items = []
    for item in session.items:
        stage = stage_of_path(item.path)
        marker = item.get_closest_marker("points")
        points = float(marker.args[0]) if marker and marker.args else 1.0
        items.append(
            {
                "nodeid": item.nodeid,
                "stage": stage.id if stage else None,
                "name": _check_name(item),
                "points": points,
                "timeout": _timeout_of(item),
            }
        )
    try:
        from shared.matrix import environment_summary

        _emit(event="env", **environment_summary())
    except Exception as exc:  # the summary is informative only
        _emit(event="env", error=f"{type(exc).__name__}: {exc}")
    _emit(event="collected", items=items)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        path = str(report.fspath) if getattr(report, "fspath", None) else report.nodeid
        text = str(report.longrepr) if report.longrepr else "collection failed"
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        hint = lines[-1] if lines else text
        stage = stage_of_path(Path(ROOT, report.nodeid.split("::")[0])) if report.nodeid else None
        _emit(event="collect-error", path=path, stage=stage.id if stage else None, hint=hint[:500])


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _reports[nodeid] = {"status": "passed", "hint": "", "duration": 0.0}
    _emit(event="start", nodeid=nodeid, t=time.time())


# ------------------------------------------------------------------ classifying an outcome


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 20:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _override_dirs() -> set[Path]:
    return {Path(v) for k, v in os.environ.items() if k.startswith("LLMFS_IMPL_") and v}


def _learner_location(tb: Any) -> str:
    """`skeleton/positional.py line 42, in forward` for the deepest frame in a stage file."""
    found = ""
    for frame in traceback.extract_tb(tb):
        p = Path(frame.filename)
        if p.parent.name in ("skeleton", "solution") or p.parent in _override_dirs():
            found = f"{p.parent.name}/{p.name} line {frame.lineno}, in {frame.name}"
    return found


def _strip_rewrite(message: str) -> str:
    """pytest's assertion rewriting appends 'assert <expr>' lines to a message; keep the message."""
    if "\nassert " in message:
        message = message.split("\nassert ", 1)[0]
    return message.strip()


def _raising_stage(exc: BaseException) -> str | None:
    """The stage whose file raised ``exc`` (the innermost frame inside a stage folder), if any."""
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        stage = stage_of_path(frame.filename)
        if stage is not None and "tests" not in Path(frame.filename).parts:
            found = stage.id
    return found


def _classify(excinfo: pytest.ExceptionInfo[BaseException], stage: str | None = None) -> tuple[str, str]:
    exc = excinfo.value
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, NotImplementedError):
            what = str(e).strip()
            origin = _raising_stage(e)
            if origin is not None and stage is not None and origin != stage:
                # --deps mine: an earlier stage of the learner's own is not done yet.
                what = f"stage {origin}, {what}" if what else f"stage {origin}"
            return "not implemented", f"not implemented yet ({what})" if what else "not implemented yet"
    text = str(exc)
    if type(exc).__name__ == "Failed" and text.startswith("Timeout"):
        return "timed out", f"took longer than its time limit ({text.removeprefix('Timeout').strip(' >')}): an infinite loop, or far too much work"
    if isinstance(exc, AssertionError):
        msg = _strip_rewrite(text) or "assertion failed"
        return "failed", msg
    if isinstance(exc, SystemExit):
        where = _learner_location(excinfo.tb)
        return "failed", f"your code called sys.exit({exc.code!r}) during this check" + (f" ({where})" if where else "")
    if type(exc).__name__ == "Skipped":
        return "skipped", text
    where = _learner_location(excinfo.tb)
    first = text.strip().splitlines()[0] if text.strip() else ""
    msg = f"{type(exc).__name__}: {first}"[:400]
    if type(exc).__name__ == "LearnerCodeError":
        return "failed", first
    return "failed", msg + (f"  ({where})" if where else "")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]):  # type: ignore[no-untyped-def]
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    rec = _reports.setdefault(item.nodeid, {"status": "passed", "hint": "", "duration": 0.0})
    rec["duration"] += report.duration
    if report.skipped and call.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        rec["status"], rec["hint"] = "skipped", str(reason).removeprefix("Skipped: ")
    elif report.failed and rec["status"] in ("passed", "skipped"):
        if call.excinfo is not None:
            owner = stage_of_path(item.path)
            status, hint = _classify(call.excinfo, owner.id if owner else None)
        else:
            status, hint = "failed", str(report.longrepr)[-400:]
        if call.when == "teardown" and status == "failed":
            hint = f"after the check, cleaning up failed: {hint}"
        rec["status"], rec["hint"] = status, hint


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    rec = _reports.get(nodeid, {"status": "crashed", "hint": "no report", "duration": 0.0})
    _emit(event="result", nodeid=nodeid, status=rec["status"], hint=rec["hint"], duration=round(rec["duration"], 4))


_exit_status = {"code": 0}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Every result is on disk: skip the interpreter's slow teardown of torch (about 0.1 s)."""
    if _EVENTS:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status["code"])
