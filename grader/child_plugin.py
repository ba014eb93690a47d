"""pytest plugin loaded inside the grader's child process (``-p grader.child_plugin``).

It reports to the grader one event per line, flushed as it goes, so whatever the
learner's code does to the process (hang, exit, crash) the grader still knows what
finished and what was running:

    {"event": "env", ...}                       devices and autocast dtypes
    {"event": "collected", "items": [...]}      every check: nodeid, stage, name, points, timeout, cell, selected
    {"event": "collect-error", "path", "hint"}  a test file that could not be collected
    {"event": "start", "nodeid", "t"}           a check began
    {"event": "import-start" / "import-end"}    the loader is importing a learner file
    {"event": "result", "nodeid", "status", "hint", "duration"}

The channel (see ``grader.runner``): on POSIX the grader writes this run's settings to the
child's stdin as one JSON line — a random secret, the number of an inherited pipe to write
events to, the time limit, the -k expression — and the plugin reads it at import, before
any learner code can run, then points stdin at /dev/null. Every event line carries an
HMAC of its payload under the secret, so a line written by anything but this plugin is
rejected. Elsewhere the settings come in a file named by ``LLMFS_CONFIG`` that the plugin
deletes on reading.

A check with no "result" line did not finish: the grader reports it as crashed or
timed out, never as passed. A skip counts only for a device-matrix cell that this
machine lacks (``shared.matrix``); any other skip, xfail or ``unittest.SkipTest`` is a
failure. A ``KeyboardInterrupt`` or ``pytest.exit`` raised inside a check fails that check.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.registry import ROOT, stage_of_path

#: The longest hint sent to the grader (the grader caps again).
MAX_HINT = 2000


def _read_config() -> dict[str, Any]:
    """This run's settings, read once before any learner code runs (None of them stay in reach)."""
    raw = b""
    path = os.environ.pop("LLMFS_CONFIG", None)
    if os.environ.pop("LLMFS_CHANNEL", None) == "stdin":
        try:
            while not raw.endswith(b"\n"):
                chunk = os.read(0, 65536)
                if not chunk:
                    break
                raw += chunk
        except OSError:
            raw = b""
        try:  # nothing later can read the settings again
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
        except OSError:
            pass
    elif path:
        try:
            raw = Path(path).read_bytes()
            os.unlink(path)
        except OSError:
            raw = b""
    try:
        data = json.loads(raw.decode("utf-8")) if raw else {}
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


_CONFIG = _read_config()


def _limit_memory() -> None:
    """The address-space limit the grader asked for (``--memory-limit``), soft and hard, before learner code runs."""
    gib = _CONFIG.get("memory_limit_gib")
    if not isinstance(gib, (int, float)) or isinstance(gib, bool) or gib <= 0:
        return
    try:
        import resource

        limit = int(gib * (1 << 30))
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):  # not enforceable here (Windows, some macOS versions)
        pass


_limit_memory()
_OVERRIDE_TIMEOUT: float | None = float(_CONFIG["timeout"]) if isinstance(_CONFIG.get("timeout"), (int, float)) else None
_KEYWORD: str | None = _CONFIG.get("keyword") if isinstance(_CONFIG.get("keyword"), str) else None
_reports: dict[str, dict[str, Any]] = {}
_absent_cells: dict[str, str] = {}  # matrix cell id -> why this machine cannot run it (fixed at collection)


def _open_channel() -> Callable[[str], None] | None:
    fd = _CONFIG.get("events_fd")
    if isinstance(fd, int):
        try:
            stream = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        except OSError:
            return None

        def write(line: str) -> None:
            stream.write(line)
            stream.flush()

        return write
    path = _CONFIG.get("events_path")
    if isinstance(path, str):

        def append(line: str) -> None:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line)

        return append
    return None


_WRITE = _open_channel()


def _signer(key: bytes) -> Callable[[str], str]:
    def sign(payload: str) -> str:
        return hmac.new(key, payload.encode("utf-8"), hashlib.sha256).hexdigest()

    return sign


_sign = _signer(str(_CONFIG.pop("secret", "")).encode())  # the secret lives on only inside this closure


def _emit(**fields: Any) -> None:
    if _WRITE is None:
        return
    payload = json.dumps(fields, default=str)
    try:
        _WRITE(f"{payload}\t{_sign(payload)}\n")
    except (OSError, ValueError):  # the grader is gone: nothing to tell
        pass


if _WRITE is not None:
    # The loader reports learner imports through this plugin's channel (set once; see shared.loader).
    from shared import loader as _loader

    _loader.set_event_sink(_emit)


def safe_str(value: object, limit: int = MAX_HINT) -> str:
    """``str(value)`` that never raises (a learner's exception may have a broken ``__str__``)."""
    try:
        text = str(value)
    except BaseException:  # noqa: BLE001 - anything at all from learner code
        try:
            text = f"<{type(value).__name__} whose str() failed>"
        except BaseException:  # noqa: BLE001
            text = "<str() failed>"
    if not isinstance(text, str):  # a str subclass with tricks
        text = "<str() returned a non-string>"
    return cap(text, limit)


def cap(text: str, limit: int = MAX_HINT) -> str:
    text = str.__str__(text) if isinstance(text, str) else "<not text>"
    return text if len(text) <= limit else text[: limit - 40].rstrip() + f" ... ({len(text) - limit + 40} more characters)"


def _check_name(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    first = doc.strip().splitlines()[0].strip() if doc.strip() else item.name.split("[")[0].removeprefix("test_").replace("_", " ")
    callspec = getattr(item, "callspec", None)
    return f"{first} [{callspec.id}]" if callspec is not None else first


def _cell(item: pytest.Item) -> Any:
    """The device-matrix cell (``shared.matrix.Setting``) a check runs on, if it takes ``setting``."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    value = callspec.params.get("setting")
    return value if hasattr(value, "skip_reason") and hasattr(value, "id") else None


def _timeout_of(item: pytest.Item) -> float | None:
    marker = item.get_closest_marker("timeout")
    if marker and marker.args:
        return float(marker.args[0])
    return None


def _matches(expr: Any, item: pytest.Item, title: str) -> bool:
    """-k on what the learner sees: a check's shown title, or pytest's names (function, file, markers)."""
    from _pytest.mark import KeywordMatcher

    names = KeywordMatcher.from_item(item)

    def matcher(name: str, /, **kwargs: Any) -> bool:
        if kwargs:
            return False
        return names(name) or name.lower() in title.lower()

    try:
        return bool(expr.evaluate(matcher))
    except Exception:  # noqa: BLE001 - a malformed expression selects nothing (the grader validated it)
        return False


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        stage = stage_of_path(item.path)
        if _OVERRIDE_TIMEOUT is not None:
            item.add_marker(pytest.mark.timeout(_OVERRIDE_TIMEOUT), append=False)
        elif stage is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(stage.check_timeout))
    if _KEYWORD:
        from _pytest.mark.expression import Expression

        try:
            expr = Expression.compile(_KEYWORD)
        except SyntaxError:
            expr = None
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            item._llmfs_title = _check_name(item)
            (keep if expr is not None and _matches(expr, item, item._llmfs_title) else drop).append(item)  # type: ignore[attr-defined]
        _deselected.extend(drop)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep


_deselected: list[pytest.Item] = []


def _describe_item(item: pytest.Item, selected: bool) -> dict[str, Any]:
    stage = stage_of_path(item.path)
    marker = item.get_closest_marker("points")
    points = float(marker.args[0]) if marker and marker.args else 1.0
    cell = _cell(item)
    return {
        "nodeid": item.nodeid,
        "stage": stage.id if stage else None,
        "name": _check_name(item),
        "points": points,
        "timeout": _timeout_of(item),
        "cell": cell.id if cell is not None else None,
        "selected": selected,
    }


def pytest_collection_finish(session: pytest.Session) -> None:
    # Fixed before the first learner import: the grader accepts results for these ids only.
    items = [_describe_item(item, True) for item in session.items]
    items += [_describe_item(item, False) for item in _deselected]
    try:
        from shared.matrix import SETTINGS, environment_summary

        for s in SETTINGS:
            reason = s.skip_reason()
            if reason:
                _absent_cells[s.id] = reason
        _emit(event="env", **environment_summary())
    except Exception as exc:  # the summary is informative only
        _emit(event="env", error=f"{type(exc).__name__}: {safe_str(exc, 200)}")
    _emit(event="collected", items=items)
    _snapshot.update(_fingerprint())


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        path = str(report.fspath) if getattr(report, "fspath", None) else report.nodeid
        text = safe_str(report.longrepr, 20_000) if report.longrepr else "collection failed"
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        hint = lines[-1] if lines else text
        stage = stage_of_path(Path(ROOT, report.nodeid.split("::")[0])) if report.nodeid else None
        _emit(event="collect-error", path=path, stage=stage.id if stage else None, hint=hint[:500])


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _reports[nodeid] = {"status": "passed", "hint": "", "duration": 0.0}
    _emit(event="start", nodeid=nodeid, t=time.time())


# ------------------------------------------------------------------ learner code that stops the run


class LearnerInterrupt(Exception):
    """The learner's code raised KeyboardInterrupt or called pytest.exit during a check."""


def _guarded(what: str, gen: Any) -> Any:
    try:
        return (yield from gen)
    except KeyboardInterrupt:
        raise LearnerInterrupt(f"your code raised KeyboardInterrupt during {what}: it is counted as a failure") from None
    except pytest.exit.Exception as exc:
        raise LearnerInterrupt(f"your code called pytest.exit({repr_safe(safe_str(exc.msg, 200))}) during {what}") from None


def _inner() -> Any:
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):  # type: ignore[no-untyped-def]
    # A cell this machine lacks is skipped before any learner code is imported for it.
    cell = _cell(item)
    if cell is not None and cell.id in _absent_cells:
        pytest.skip(_absent_cells[cell.id])
    return (yield from _guarded("the check's set-up", _inner()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):  # type: ignore[no-untyped-def]
    return (yield from _guarded("this check", _inner()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    return (yield from _guarded("the check's clean-up", _inner()))


# ------------------------------------------------------------------ classifying an outcome


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 20:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _override_dirs() -> set[Path]:
    from shared.loader import override_dirs

    return override_dirs()


def _learner_location(tb: Any) -> str:
    """`skeleton/positional.py line 42, in forward` for the deepest frame in a stage file."""
    found = ""
    try:
        frames = traceback.extract_tb(tb)
    except Exception:  # noqa: BLE001
        return ""
    dirs = _override_dirs()
    for frame in frames:
        p = Path(frame.filename)
        if p.parent.name in ("skeleton", "solution") or p.parent in dirs:
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
    try:
        frames = traceback.extract_tb(exc.__traceback__)
    except Exception:  # noqa: BLE001
        return None
    for frame in frames:
        stage = stage_of_path(frame.filename)
        if stage is not None and "tests" not in Path(frame.filename).parts:
            found = stage.id
    return found


def _memory_note(exc: BaseException, text: str) -> str:
    limit = _CONFIG.get("memory_limit_gib")
    if limit and (isinstance(exc, MemoryError) or "can't allocate memory" in text or "not enough memory" in text):
        return f" (the grader limits the checks' process to {limit:g} GiB of address space: far too much memory asked for? --memory-limit changes it)"
    return ""


def _classify(excinfo: pytest.ExceptionInfo[BaseException], stage: str | None = None) -> tuple[str, str]:
    exc = excinfo.value
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, NotImplementedError):
            what = safe_str(e, 300).strip()
            origin = _raising_stage(e)
            if origin is not None and stage is not None and origin != stage:
                # --deps mine: an earlier stage of the learner's own is not done yet.
                what = f"stage {origin}, {what}" if what else f"stage {origin}"
            return "not implemented", f"not implemented yet ({what})" if what else "not implemented yet"
    text = safe_str(exc)
    name = safe_str(type(exc).__name__, 100)
    if name == "Failed" and text.startswith("Timeout"):
        return "timed out", f"took longer than its time limit ({text.removeprefix('Timeout').strip(' >')}): an infinite loop, or far too much work"
    if isinstance(exc, LearnerInterrupt):
        return "failed", text
    if isinstance(exc, AssertionError):
        msg = _strip_rewrite(text) or "assertion failed"
        return "failed", msg
    if isinstance(exc, SystemExit):
        where = _learner_location(excinfo.tb)
        return "failed", f"your code called sys.exit({safe_str(repr_safe(exc.code), 100)}) during this check" + (f" ({where})" if where else "")
    where = _learner_location(excinfo.tb)
    first = text.strip().splitlines()[0] if text.strip() else ""
    msg = f"{name}: {first}"[:400] + _memory_note(exc, text)
    if name == "LearnerCodeError":
        return "failed", first
    return "failed", msg + (f"  ({where})" if where else "")


def repr_safe(value: object) -> str:
    try:
        return repr(value)
    except BaseException:  # noqa: BLE001
        return "<repr() failed>"


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return safe_str(report.longrepr[2]).removeprefix("Skipped: ")
    return safe_str(report.longrepr).removeprefix("Skipped: ")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]):  # type: ignore[no-untyped-def]
    report: pytest.TestReport = yield
    rec = _reports.setdefault(item.nodeid, {"status": "passed", "hint": "", "duration": 0.0})
    rec["duration"] += max(0.0, float(call.duration))
    # The outcome comes from what the phase raised (``call.excinfo``), not from the report object,
    # which other hooks may rewrite.
    excinfo = call.excinfo
    if excinfo is None or call.when not in ("setup", "call", "teardown") or rec["status"] == "skipped":
        return report  # (a cell skipped for an absent device stays skipped, whatever later phases report)
    exc = excinfo.value
    if isinstance(exc, pytest.skip.Exception) and not isinstance(exc, pytest.xfail.Exception) and call.when in ("setup", "call"):
        cell = _cell(item)
        if call.when == "setup" and cell is not None and cell.id in _absent_cells and rec["status"] == "passed":
            rec["status"], rec["hint"] = "skipped", _absent_cells[cell.id]
        elif rec["status"] in ("passed", "skipped"):
            reason = safe_str(getattr(exc, "msg", None) or exc, 300)
            rec["status"] = "failed"
            rec["hint"] = (
                f"the check was skipped ({reason}) while your code ran; only the course's device matrix may skip a check, "
                "for a device this machine lacks, so it counts as failed"
            )
        return report
    if isinstance(exc, pytest.xfail.Exception):
        if rec["status"] in ("passed", "skipped"):
            rec["status"], rec["hint"] = "failed", "the check was marked as an expected failure (xfail) while your code ran: it counts as failed"
        return report
    if rec["status"] in ("passed", "skipped"):
        owner = stage_of_path(item.path)
        try:
            status, hint = _classify(excinfo, owner.id if owner else None)
        except BaseException as err:  # noqa: BLE001 - never lose a result to a hostile exception
            status, hint = "failed", f"the check failed with an exception that could not be described ({safe_str(type(err).__name__, 100)})"
        if call.when == "teardown" and status == "failed":
            hint = f"after the check, cleaning up failed: {hint}"
        rec["status"], rec["hint"] = status, cap(hint)
    return report


# ------------------------------------------------------------------ checking code changed while learner code ran

#: Modules whose functions the checks rely on; a learner's patch to any of them fails every later check.
_GUARDED_MODULES = ("shared.testing", "shared.loader", "shared.matrix", "shared.pytest_plugin", "shared.hints", "shared.registry")
_snapshot: dict[str, Any] = {}
_tampered: list[str] = []


def _fingerprint() -> dict[str, Any]:
    import sys

    prints: dict[str, Any] = {}
    for modname in _GUARDED_MODULES:
        mod = sys.modules.get(modname)
        if mod is None:
            continue
        prints[modname] = id(mod)
        for name, value in list(vars(mod).items()):
            if callable(value) and not name.startswith("__"):
                code = getattr(value, "__code__", None)
                prints[f"{modname}.{name}"] = (id(value), id(code) if code is not None else None)
    prints["plugins"] = frozenset(id(p) for p in _config_ref[0].pluginmanager.get_plugins()) if _config_ref else None
    return prints


_config_ref: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    _config_ref.append(config)


def _check_tampering() -> str | None:
    if _tampered:
        return _tampered[0]
    if not _snapshot:
        return None
    now = _fingerprint()
    changed = sorted(k for k in _snapshot if _snapshot[k] != now.get(k))
    if changed:
        what = "pytest's plugins (a hook was registered)" if changed[0] == "plugins" else changed[0]
        _tampered.append(f"the course's checking code ({what}) was changed while your code ran: this and every later check count as failed")
        return _tampered[0]
    return None


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    rec = _reports.get(nodeid, {"status": "crashed", "hint": "no report", "duration": 0.0})
    tampered = _check_tampering()
    if tampered and rec["status"] != "skipped":
        rec = {**rec, "status": "failed", "hint": tampered}
    _emit(event="result", nodeid=nodeid, status=rec["status"], hint=cap(rec["hint"]), duration=round(rec["duration"], 4))


_exit_status = {"code": 0}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Every result is sent: skip the interpreter's slow teardown of torch (about 0.1 s)."""
    if _WRITE is not None:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status["code"])
