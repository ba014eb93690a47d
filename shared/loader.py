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

No torch here: the grader imports this module too.
"""

from __future__ import annotations

import importlib.util
import json
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


def current_version() -> str:
    v = os.environ.get("LLMFS_VERSION", "skeleton")
    if v not in VERSIONS:
        raise ValueError(f"LLMFS_VERSION={v!r}: expected one of {', '.join(VERSIONS)}")
    return v


def current_deps() -> str:
    d = os.environ.get("LLMFS_DEPS", "solution")
    if d not in DEPS:
        raise ValueError(f"LLMFS_DEPS={d!r}: expected one of {', '.join(DEPS)}")
    return d


def _stage(stage_id: str) -> Stage:
    try:
        return BY_ID[stage_id]
    except KeyError:
        raise ValueError(f"unknown stage {stage_id!r}; stages are {', '.join(BY_ID)}") from None


def module_path(stage_id: str, version: str | None = None) -> Path:
    """The file that ``load(stage_id)`` would import for ``version`` (default: the graded one)."""
    stage = _stage(stage_id)
    override = os.environ.get("LLMFS_IMPL_" + stage_id.replace(".", "_"))
    if override:
        return Path(override) / f"{stage.module}.py"
    return stage.module_path(version or current_version())


def _event(**fields: object) -> None:
    """Tell the grader what is being imported, so a crash there is reported as such."""
    path = os.environ.get("LLMFS_EVENTS")
    if not path:
        return
    fields["t"] = time.time()
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(fields) + "\n")


def _describe(exc: BaseException, path: Path) -> str:
    """One line: what went wrong while importing ``path``, and where."""
    if isinstance(exc, SyntaxError):
        return f"{path.name} line {exc.lineno}: SyntaxError: {exc.msg}"
    line = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if Path(frame.filename).resolve() == path.resolve():
            line = f" line {frame.lineno}"
            break
    return f"{path.name}{line}: {type(exc).__name__}: {exc}"


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
            err = LearnerCodeError(f"stage {stage_id} ({rel}) could not load its dependency: {exc}")
        elif isinstance(exc, SystemExit):
            err = LearnerCodeError(f"stage {stage_id}: importing {rel} called sys.exit({exc.code!r})")
        else:
            err = LearnerCodeError(f"stage {stage_id}: importing {rel} failed: {_describe(exc, path)}")
        err.__cause__ = exc if not isinstance(exc, SystemExit) else None
        _cache[path] = err
        raise err from None
    finally:
        _event(event="import-end", stage=stage_id, path=str(rel))
    _cache[path] = module
    return module


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
