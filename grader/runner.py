"""Run a stage's checks in a child pytest process and read back what happened. No torch.

The child writes an event log (see ``grader.child_plugin``). If it dies or hangs
part-way — ``os._exit``, a segfault, an infinite loop in C code — the check that
was running is reported as crashed (or timed out) and the remaining checks are
run again in a fresh child, a bounded number of times. A check with no result is
never counted as passed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.results import CheckResult, StageResult
from shared.registry import ROOT, Stage

#: How many times the remaining checks are run again after the child died.
MAX_RESTARTS = 4
_TAIL_BYTES = 4000


@dataclass
class RunOptions:
    version: str = "skeleton"
    deps: str = "solution"
    keyword: str | None = None  # pytest -k
    timeout: float | None = None  # overrides every check's time limit
    stage_timeout: float | None = None  # overrides every stage's overall limit (start-up included)
    # pytest-timeout's method: "signal" interrupts the check (POSIX); "thread" ends the process (everywhere).
    timeout_method: str = "signal" if hasattr(signal, "SIGALRM") else "thread"
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment for the child (tests use LLMFS_IMPL_*)


@dataclass
class _ChildRun:
    env_info: dict[str, Any] | None
    collected: list[dict[str, Any]] | None
    results: dict[str, dict[str, Any]]
    collect_errors: list[dict[str, Any]]
    running: dict[str, Any] | None  # the last check started without a result
    importing: dict[str, Any] | None  # a learner file being imported when the child stopped
    returncode: int | None  # None: killed at the deadline
    output_tail: str


def _read_events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue  # a torn last line from a killed child
                if isinstance(ev, dict):
                    events.append(ev)
    except OSError:
        pass
    return events


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError, OSError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _run_child(targets: Sequence[str], opts: RunOptions, deadline_s: float, workdir: Path) -> _ChildRun:
    events_path = workdir / f"events-{time.monotonic_ns()}.jsonl"
    out_path = workdir / f"output-{time.monotonic_ns()}.txt"
    # Nothing inherited may change what is graded: only this run's own settings reach the child.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    env.update(
        {
            "LLMFS_VERSION": opts.version,
            "LLMFS_DEPS": opts.deps,
            "LLMFS_EVENTS": str(events_path),
            "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PYTHONDONTWRITEBYTECODE": env.get("PYTHONDONTWRITEBYTECODE", ""),
        }
    )
    env.pop("PYTEST_ADDOPTS", None)  # the learner's own pytest settings must not change grading
    env.pop("PYTEST_PLUGINS", None)
    # Only the plugins grading needs: other installed plugins (hypothesis alone costs over a second
    # to import) neither slow grading down nor change its outcome.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    # The checks use tiny tensors: one CPU thread is faster (no pool start-up or contention) and
    # makes results reproducible. A learner's own setting wins.
    env.setdefault("OMP_NUM_THREADS", "1")
    if opts.timeout is not None:
        env["LLMFS_TIMEOUT"] = str(opts.timeout)
    env.update(opts.env)
    cmd = [
        sys.executable, "-m", "pytest", *targets,
        "-p", "pytest_timeout", "-p", "grader.child_plugin",
        "-p", "no:cacheprovider",
        # These two run gc.collect() five times at exit (0.4 s with torch loaded) to report exceptions
        # raised in __del__ and threads; grading has no use for that.
        "-p", "no:unraisableexception", "-p", "no:threadexception",
        "-q", "--tb=no", "--show-capture=no", "-rN", "--no-header",
        "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
        "--import-mode=importlib",
        "--timeout-method", opts.timeout_method,
    ]  # fmt: skip
    if opts.keyword:
        cmd += ["-k", opts.keyword]
    popen_kw: dict[str, Any] = {}
    if os.name == "posix":
        popen_kw["start_new_session"] = True  # one process group: killing it takes the learner's children too
    else:
        popen_kw["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **popen_kw
        )
        try:
            returncode: int | None = proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            returncode = None
        except BaseException:  # Ctrl-C: take the child down with us
            _kill(proc)
            raise
    events = _read_events(events_path)
    run = _ChildRun(None, None, {}, [], None, None, returncode, _tail(out_path))
    for ev in events:
        kind = ev.get("event")
        if kind == "env":
            run.env_info = ev
        elif kind == "collected" and isinstance(ev.get("items"), list):
            run.collected = ev["items"]
        elif kind == "collect-error":
            run.collect_errors.append(ev)
        elif kind == "start":
            run.running = ev
        elif kind == "result" and isinstance(ev.get("nodeid"), str):
            run.results[ev["nodeid"]] = ev
            if run.running and run.running.get("nodeid") == ev["nodeid"]:
                run.running = None
        elif kind == "import-start":
            run.importing = ev
        elif kind == "import-end":
            run.importing = None
    for p in (events_path, out_path):
        try:
            p.unlink()
        except OSError:
            pass
    return run


def _death(run: _ChildRun) -> str:
    """How the child ended, in words."""
    rc = run.returncode
    if rc is None:
        return "it ran past the time limit and was stopped"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"the process was killed by {name}" + (" (a segmentation fault)" if name == "SIGSEGV" else "")
    return f"the process exited with status {rc} before the check finished (os._exit or a crash in native code?)"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def run_stages(stages: Sequence[Stage], opts: RunOptions) -> tuple[list[StageResult], dict[str, Any] | None]:
    """Grade ``stages`` in child processes. Returns per-stage results and the child's environment summary."""
    results = {s.id: StageResult(s.id, s.title) for s in stages}
    by_id = {s.id: s for s in stages}
    env_info: dict[str, Any] | None = None
    checks: dict[str, CheckResult] = {}
    order: list[str] = []
    limits: dict[str, float] = {}  # nodeid -> the check's own time limit
    with tempfile.TemporaryDirectory(prefix="llmfs-grade-") as tmp:
        workdir = Path(tmp)
        missing = [s for s in stages if not s.tests_dir.is_dir()]
        for s in missing:
            results[s.id].error = f"{s.tests_dir.relative_to(ROOT)} is missing: restore it with `git checkout -- {s.tests_dir.relative_to(ROOT)}`"
        live = [s for s in stages if s not in missing]
        targets = [str(s.tests_dir.relative_to(ROOT)) for s in live]
        restarts = 0
        first = True
        while targets:
            pending_stages = {c.stage for c in checks.values() if c.status == "pending"} if not first else {s.id for s in live}
            # The overall limit also catches what a check's own limit cannot interrupt (a loop in native
            # code with signals blocked) and a hang at start-up or collection.
            deadline = sum(opts.stage_timeout or by_id[sid].stage_timeout for sid in pending_stages if sid in by_id)
            run = _run_child(targets, opts, deadline, workdir)
            env_info = env_info or run.env_info
            if first:
                for err in run.collect_errors:
                    sid = err.get("stage")
                    if sid in results:
                        results[sid].error = f"the course tests in {err.get('path')} could not be loaded: {err.get('hint')}"
                if run.collected is None:
                    why = _death(run) if run.returncode not in (0, 1, 2, 3, 4, 5) else _last_line(run.output_tail)
                    for s in live:
                        if not results[s.id].error:
                            results[s.id].error = f"the checks could not start: {why}"
                    break
                for item in run.collected:
                    sid = item.get("stage")
                    if sid not in results:
                        continue
                    checks[item["nodeid"]] = CheckResult(
                        nodeid=item["nodeid"], stage=sid, name=str(item.get("name", item["nodeid"])),
                        status="pending", max_points=float(item.get("points", 1.0)),
                    )  # fmt: skip
                    order.append(item["nodeid"])
                    if item.get("timeout"):
                        limits[item["nodeid"]] = float(item["timeout"])
                first = False
            for nodeid, ev in run.results.items():
                c = checks.get(nodeid)
                if c is not None and c.status == "pending":
                    c.status = str(ev.get("status", "crashed"))
                    c.hint = str(ev.get("hint", ""))
                    c.duration = float(ev.get("duration", 0.0) or 0.0)
            pending = [n for n in order if checks[n].status == "pending"]
            if not pending:
                break
            # The child stopped with checks left: blame the one that was running.
            culprit = run.running.get("nodeid") if run.running else None
            death = _death(run)
            if culprit in checks and checks[culprit].status == "pending":
                c = checks[culprit]
                started = float(run.running.get("t", 0.0)) if run.running else 0.0
                c.duration = max(0.0, time.time() - started) if started else 0.0
                limit = limits.get(culprit)
                if run.returncode is None or (limit is not None and c.duration >= 0.95 * limit):
                    # Killed at the stage's deadline, or by pytest-timeout's thread method (Windows), which
                    # ends the whole process when a check overruns.
                    c.status, c.hint = "timed out", "took longer than its time limit and was stopped: an infinite loop, or far too much work"
                elif run.importing:
                    c.status = "crashed"
                    c.hint = f"importing {run.importing.get('path')} ended the process: {death}"
                else:
                    c.status, c.hint = "crashed", f"{death}"
                # A file that kills the process on import kills every check of that stage the same way.
                if run.importing:
                    for n in pending:
                        if checks[n].stage == c.stage and checks[n].status == "pending":
                            checks[n].status, checks[n].hint = "crashed", c.hint
            pending = [n for n in order if checks[n].status == "pending"]
            restarts += 1
            if not pending:
                break
            if restarts > MAX_RESTARTS:
                for n in pending:
                    checks[n].status = "crashed"
                    checks[n].hint = f"not run: the checks' process died {restarts} times ({death}); fix the crash above first"
                break
            targets = pending
    for n in order:
        c = checks[n]
        results[c.stage].checks.append(c)
    for r in results.values():
        r.duration = sum(c.duration for c in r.checks)
    return [results[s.id] for s in stages], env_info
