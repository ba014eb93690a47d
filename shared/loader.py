"""Load the selected version of a stage, and of the earlier stages it builds on.

Tests and solutions never import a stage by a hard-coded path; they ask here::

    from shared.loader import load, load_dep
    pe = load("1.1")            # the version being graded (skeleton or solution)
    mha = load_dep("1.4")       # an earlier stage's component, per --deps

The choice travels in environment variables that the grader sets for its child
process (and that you can set yourself to run pytest by hand):

``LLMFS_VERSION``  ``skeleton`` (default) or ``solution``: what is graded.
``LLMFS_DEPS``     ``solution`` (default): earlier stages are the reference ones, so a
                   failure in stage N points at stage N; ``mine``: they are the same
                   version as the one graded (your own work, for the "all built by me" run).
``LLMFS_IMPL_<ID>`` a folder that replaces stage <ID>'s version folder (``LLMFS_IMPL_1_4``):
                   the grader's ``--submission`` grades a learner's files this way, and the course's
                   own tests grade deliberately broken solutions. With ``LLMFS_DEPS=mine`` it also
                   supplies that stage to the stages built on it.

All of these are read once, when this module is first imported — before any learner code
runs — so learner code that changes ``os.environ`` (or reloads this module) changes nothing
about what is graded.

No torch here: the grader imports this module too.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

from shared.registry import BY_ID, DEPS, ROOT, VERSIONS, Stage

__all__ = ["LearnerCodeError", "current_version", "current_deps", "load", "load_dep", "module_path"]


class LearnerCodeError(ImportError):
    """A stage's file could not be imported; the message says which file and why, in one line."""


_cache: dict[Path, ModuleType | BaseException] = {}


def _capture() -> dict[str, object]:
    return {
        "version": os.environ.get("LLMFS_VERSION", "skeleton"),
        "deps": os.environ.get("LLMFS_DEPS", "solution"),
        "impl": {k.removeprefix("LLMFS_IMPL_"): v for k, v in os.environ.items() if k.startswith("LLMFS_IMPL_") and v},
    }


# Captured once: a reload (``importlib.reload``) re-runs this file in the same namespace and keeps them.
_SETTINGS: dict[str, object] = globals().get("_SETTINGS") or _capture()
_event_sink: list[object] = globals().get("_event_sink") or []  # the grader's channel (set by grader.child_plugin)


def set_event_sink(sink: object) -> None:
    """Where import events go (the grader's child plugin sets it once; later calls change nothing)."""
    if not _event_sink:
        _event_sink.append(sink)


def current_version() -> str:
    v = str(_SETTINGS["version"])
    if v not in VERSIONS:
        raise ValueError(f"LLMFS_VERSION={v!r}: expected one of {', '.join(VERSIONS)}")
    return v


def current_deps() -> str:
    d = str(_SETTINGS["deps"])
    if d not in DEPS:
        raise ValueError(f"LLMFS_DEPS={d!r}: expected one of {', '.join(DEPS)}")
    return d


def _overrides() -> dict[str, str]:
    impl = _SETTINGS["impl"]
    return dict(impl) if isinstance(impl, dict) else {}


def override_dirs() -> set[Path]:
    """The folders that replace stages' version folders (``LLMFS_IMPL_*``), as captured at start-up."""
    return {Path(v) for v in _overrides().values()}


def _stage(stage_id: str) -> Stage:
    try:
        return BY_ID[stage_id]
    except KeyError:
        raise ValueError(f"unknown stage {stage_id!r}; stages are {', '.join(BY_ID)}") from None


def module_path(stage_id: str, version: str | None = None) -> Path:
    """The file that ``load(stage_id)`` would import for ``version`` (default: the graded one)."""
    stage = _stage(stage_id)
    override = _overrides().get(stage_id.replace(".", "_"))
    if override:
        return Path(override) / f"{stage.module}.py"
    return stage.module_path(version or current_version())


def _event(**fields: object) -> None:
    """Tell the grader what is being imported, so a crash there is reported as such."""
    if not _event_sink:
        return
    fields["t"] = time.time()
    sink = _event_sink[0]
    if callable(sink):
        sink(**fields)


def _safe(value: object, limit: int = 500) -> str:
    """``str(value)``, capped, that never raises (a learner's exception may have a broken ``__str__``)."""
    try:
        text = str(value)
        text = text if type(text) is str else "<str() returned a non-string>"
    except BaseException:  # noqa: BLE001 - anything at all from learner code
        text = "<str() failed>"
    return text if len(text) <= limit else text[:limit] + " ..."


def _describe(exc: BaseException, path: Path) -> str:
    """One line: what went wrong while importing ``path``, and where."""
    if isinstance(exc, SyntaxError):
        return f"{path.name} line {exc.lineno}: SyntaxError: {_safe(exc.msg)}"
    line = ""
    try:
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if Path(frame.filename).resolve() == path.resolve():
                line = f" line {frame.lineno}"
                break
    except Exception:  # noqa: BLE001
        pass
    first = (_safe(exc).strip().splitlines() or [""])[0]
    return f"{path.name}{line}: {type(exc).__name__}: {first}"


def _import(stage_id: str, path: Path, tag: str) -> ModuleType:
    path = path.resolve()
    cached = _cache.get(path)
    if isinstance(cached, ModuleType):
        return cached
    if isinstance(cached, BaseException):
        raise cached
    rel = _relative(path)
    if not path.is_file():
        err = LearnerCodeError(f"stage {stage_id}: {rel} is missing (restore it with `git checkout -- {rel}`)")
        _cache[path] = err
        raise err
    name = f"llmfs_stage_{stage_id.replace('.', '_')}_{tag}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _event(event="import-start", stage=stage_id, path=str(rel))
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        sys.modules.pop(name, None)
        raise
    except BaseException as exc:  # the learner's file is broken: say so in one line
        sys.modules.pop(name, None)
        if not isinstance(exc, (Exception, SystemExit)):  # e.g. pytest-timeout's Failed: keep it as it is
            _cache[path] = exc
            raise
        if isinstance(exc, LearnerCodeError):  # a dependency failed: keep its message, name the chain
            err = LearnerCodeError(f"stage {stage_id} ({rel}) could not load its dependency: {_safe(exc)}")
        elif isinstance(exc, SystemExit):
            err = LearnerCodeError(f"stage {stage_id}: importing {rel} called sys.exit({_safe(_repr(exc.code), 100)})")
        else:
            err = LearnerCodeError(f"stage {stage_id}: importing {rel} failed: {_describe(exc, path)}")
        err.__cause__ = exc if not isinstance(exc, SystemExit) else None
        _cache[path] = err
        raise err from None
    finally:
        _event(event="import-end", stage=stage_id, path=str(rel))
    _cache[path] = module
    return module


def _repr(value: object) -> str:
    try:
        return repr(value)
    except BaseException:  # noqa: BLE001
        return "<repr() failed>"


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def load(stage_id: str) -> ModuleType:
    """The module of stage ``stage_id`` in the version being graded (``LLMFS_VERSION``)."""
    version = current_version()
    return _import(stage_id, module_path(stage_id, version), version)


def load_dep(stage_id: str) -> ModuleType:
    """An earlier stage's module, as chosen by ``--deps``: the reference one, or your own."""
    if current_deps() == "solution":
        # The reference component: an override (LLMFS_IMPL_*) never replaces it.
        return _import(stage_id, _stage(stage_id).module_path("solution"), "solution")
    version = current_version()
    return _import(stage_id, module_path(stage_id, version), version)
