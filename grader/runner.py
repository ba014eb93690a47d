"""Run a stage's checks in a child pytest process and read back what happened. No torch.

The child reports events (see ``grader.child_plugin``) through an inherited pipe, each
line signed with a secret that only the child's plugin knows: it arrives on the child's
stdin and is gone before any learner code runs. Only ids the child collected before the
first learner import are accepted, and the first result per check wins.

If the child dies or hangs part-way — ``os._exit``, a segfault, an infinite loop in C
code — the check that was running is reported as crashed (or timed out) and the remaining
checks are run again in a fresh child, a bounded number of times, within each stage's
overall time limit (which covers all the restarts together). A check with no result is
never counted as passed.

Nothing the checks start outlives them: the child runs in its own process group, and on
Linux the grader is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so processes that
daemonised themselves come back to it and are killed before any result is read.

The child's working folder is an empty temporary folder, never the course. In the
instructor modes (``RunOptions.submission``) every stage is graded in a tree of its own
(``grader.release.stage_tree``) that holds no reference for the graded stage.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.results import MAX_HINT, CheckResult, StageResult, cap
from shared.hints import reconcile as reconcile_hints
from shared.registry import ROOT, Stage

#: How many times the remaining checks are run again after the child died.
MAX_RESTARTS = 4
_TAIL_BYTES = 4000
#: The most event data read back from one child (a flood beyond it is drained and dropped).
_MAX_EVENT_BYTES = 32 * 1024 * 1024
#: Default address-space limit of the checks' process, in GiB (CPU torch reserves under 1 GiB).
DEFAULT_MEMORY_GIB = 16.0


def default_memory_limit() -> float | None:
    """16 GiB, or no limit where an NVIDIA driver is present: CUDA reserves far more address space than it uses."""
    if not sys.platform.startswith("linux"):
        return None  # RLIMIT_AS is not enforced on macOS, and Windows has none
    if os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia"):
        return None
    return DEFAULT_MEMORY_GIB


@dataclass
class RunOptions:
    version: str = "skeleton"
    deps: str = "solution"
    keyword: str | None = None  # -k, matched against the shown titles and pytest's names
    timeout: float | None = None  # overrides every check's time limit
    stage_timeout: float | None = None  # overrides every stage's overall limit (start-up and restarts included)
    # pytest-timeout's method: "signal" interrupts the check (POSIX); "thread" ends the process (everywhere).
    timeout_method: str = "signal" if hasattr(signal, "SIGALRM") else "thread"
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment for the child (tests use LLMFS_IMPL_*)
    submission: Path | None = None  # instructor mode: grade this folder's files, each stage in a tree of its own
    memory_limit_gib: float | None = field(default_factory=default_memory_limit)  # None: no limit


class NothingSelected(Exception):
    """-k matched no check; ``titles`` are every check's shown title, for suggestions."""

    def __init__(self, titles: list[str]) -> None:
        super().__init__("no check matches")
        self.titles = titles


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
    wall: float = 0.0
    early_import: str = ""  # a learner file imported before the checks were collected


# ------------------------------------------------------------------ processes


_subreaper = {"on": False}


def _become_subreaper() -> bool:
    """Linux: orphaned descendants of this process are re-parented to it (so they can be found and killed)."""
    if _subreaper["on"]:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper["on"] = libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False
    return _subreaper["on"]


def _children() -> set[int]:
    """Pids whose parent is this process (Linux /proc)."""
    me = os.getpid()
    kids: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return kids
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == me:
                kids.add(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return kids


def _kill_group(pgid: int) -> None:
    if os.name != "posix":
        return
    try:
        if pgid != os.getpgrp():
            os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _reap_orphans(known: set[int], budget_s: float = 5.0) -> None:
    """Kill and reap every child of this process not in ``known``: what the checks left behind."""
    if not _subreaper["on"]:
        return
    deadline = time.monotonic() + budget_s
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:
        kids = _children() - known
        if not kids:
            quiet += 1
            time.sleep(0.01)
            continue
        quiet = 0
        for pid in kids:
            try:
                _kill_group(os.getpgid(pid))
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in kids:
            try:
                os.waitpid(pid, 0)
            except (ChildProcessError, OSError):
                pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The child and every process in its group, gone."""
    if os.name == "posix":
        _kill_group(proc.pid)
    else:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


# ------------------------------------------------------------------ the event channel


class _Channel:
    """The child's events: an inherited pipe on POSIX (a file elsewhere), each line signed with this run's secret."""

    def __init__(self, workdir: Path) -> None:
        self.secret = secrets.token_hex(32)
        self._chunks: list[bytes] = []
        self._size = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.read_fd: int | None = None
        self.write_fd: int | None = None
        self.path: Path | None = None
        if os.name == "posix":
            self.read_fd, self.write_fd = os.pipe()
        else:  # pragma: no cover - Windows
            self.path = workdir / f"events-{time.monotonic_ns()}.jsonl"

    def config(self) -> dict[str, Any]:
        return {"secret": self.secret, "events_fd": self.write_fd} if self.write_fd is not None else {"secret": self.secret, "events_path": str(self.path)}

    def started(self) -> None:
        """The child holds the write end now: close ours and read until every holder is gone."""
        if self.write_fd is not None:
            os.close(self.write_fd)
            self.write_fd = None
            self._thread = threading.Thread(target=self._drain, daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        assert self.read_fd is not None
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                if self._size < _MAX_EVENT_BYTES:
                    self._chunks.append(chunk)
                    self._size += len(chunk)

    def close(self) -> None:
        if self.write_fd is not None:
            os.close(self.write_fd)
            self.write_fd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.read_fd is not None and (self._thread is None or not self._thread.is_alive()):
            os.close(self.read_fd)
            self.read_fd = None

    def events(self) -> list[dict[str, Any]]:
        if self.path is not None:
            try:
                data = self.path.read_bytes()
            except OSError:
                data = b""
        else:
            with self._lock:
                data = b"".join(self._chunks)
        key = self.secret.encode()
        events: list[dict[str, Any]] = []
        for raw in data.decode("utf-8", "replace").splitlines():
            payload, sep, mac = raw.rpartition("\t")
            if not sep:
                continue
            good = hmac.new(key, payload.encode("utf-8"), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(good, mac.strip()):
                continue  # not written by the plugin: forged, or torn by a killed child
            try:
                ev = json.loads(payload)
            except ValueError:
                continue
            if isinstance(ev, dict):
                events.append(ev)
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


def _run_child(targets: Sequence[str], opts: RunOptions, deadline_s: float, workdir: Path, root: Path) -> _ChildRun:
    out_path = workdir / f"output-{time.monotonic_ns()}.txt"
    cwd = workdir / "cwd"  # an empty folder: files the learner's code saves land here, never in the course
    cwd.mkdir(exist_ok=True)
    # Nothing inherited may change what is graded: only this run's own settings reach the child.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    inherited = "" if opts.submission is not None else env.get("PYTHONPATH", "")
    env.update(
        {
            "LLMFS_VERSION": opts.version if opts.submission is None else "skeleton",
            "LLMFS_DEPS": opts.deps,
            "PYTHONPATH": os.pathsep.join([str(root), inherited]).rstrip(os.pathsep),
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
    env.update(opts.env)
    channel = _Channel(workdir)
    config = {**channel.config(), "timeout": opts.timeout, "keyword": opts.keyword, "memory_limit_gib": opts.memory_limit_gib}
    config_path: Path | None = None
    if channel.write_fd is not None:
        env["LLMFS_CHANNEL"] = "stdin"
    else:  # pragma: no cover - Windows: a file the plugin deletes on reading
        config_path = workdir / f"config-{time.monotonic_ns()}.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        env["LLMFS_CONFIG"] = str(config_path)
    cmd = [
        sys.executable, "-m", "pytest", *targets,
        "-p", "pytest_timeout", "-p", "grader.child_plugin",
        "-p", "no:cacheprovider",
        # These two run gc.collect() five times at exit (0.4 s with torch loaded) to report exceptions
        # raised in __del__ and threads; grading has no use for that.
        "-p", "no:unraisableexception", "-p", "no:threadexception",
        "-q", "--tb=no", "--show-capture=no", "-rN", "--no-header",
        "--rootdir", str(root), "-c", str(root / "pyproject.toml"),
        "--import-mode=importlib",
        "--timeout-method", opts.timeout_method,
    ]  # fmt: skip
    popen_kw: dict[str, Any] = {}
    if os.name == "posix":
        popen_kw["start_new_session"] = True  # one process group: killing it takes the learner's children too
        popen_kw["pass_fds"] = (channel.write_fd,)
    else:
        popen_kw["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
    reaping = _become_subreaper()
    known = _children() if reaping else set()
    t0 = time.monotonic()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.PIPE if channel.write_fd is not None else subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, **popen_kw,
        )  # fmt: skip
        try:
            channel.started()
            if proc.stdin is not None:
                try:
                    proc.stdin.write((json.dumps(config) + "\n").encode())
                    proc.stdin.close()
                except OSError:  # the child died at once: its exit status says why
                    pass
            try:
                returncode: int | None = proc.wait(timeout=deadline_s)
            except subprocess.TimeoutExpired:
                returncode = None
        finally:  # Ctrl-C included: nothing the checks started survives
            _stop(proc)
            _reap_orphans(known | {proc.pid})
            channel.close()
            if config_path is not None:
                config_path.unlink(missing_ok=True)
    wall = time.monotonic() - t0
    run = _ChildRun(None, None, {}, [], None, None, returncode, _tail(out_path), wall)
    for ev in channel.events():
        kind = ev.get("event")
        if kind == "env" and run.env_info is None:
            run.env_info = ev
        elif kind == "collected" and run.collected is None and isinstance(ev.get("items"), list):
            run.collected = [i for i in ev["items"] if isinstance(i, dict) and isinstance(i.get("nodeid"), str)]
        elif kind == "collect-error":
            run.collect_errors.append(ev)
        elif run.collected is None:
            if kind == "import-start":  # learner code ran before the list of checks was fixed
                run.early_import = str(ev.get("path", "a stage file"))
            continue  # checks and imports only count after the collected list is fixed
        elif kind == "start":
            run.running = ev
        elif kind == "result" and isinstance(ev.get("nodeid"), str):
            if ev["nodeid"] not in run.results:  # the first result wins
                run.results[ev["nodeid"]] = ev
            if run.running and run.running.get("nodeid") == ev["nodeid"]:
                run.running = None
        elif kind == "import-start":
            run.importing = ev
        elif kind == "import-end":
            run.importing = None
    out_path.unlink(missing_ok=True)
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


# ------------------------------------------------------------------ trusting skips


_SHORT_DTYPE = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}


def _cell_absent(cell: str, env: dict[str, Any] | None) -> bool:
    """Whether the environment summary reports matrix cell ``cell`` (``cuda-fp16``) absent on this machine."""
    if not env or not isinstance(env.get("devices"), dict):
        return False
    device, _, short = cell.partition("-")
    if short not in _SHORT_DTYPE or device not in ("cpu", "cuda", "mps"):
        return False
    present = env["devices"].get(device)
    if not isinstance(present, list):
        return True
    dtype = _SHORT_DTYPE[short]
    return dtype is not None and dtype not in present


# ------------------------------------------------------------------ grading


@dataclass
class _Group:
    stages: list[Stage]
    root: Path  # the tree the child runs in
    forced: dict[str, str] = field(default_factory=dict)  # stage id -> why its checks all fail (a refused file)


def run_stages(stages: Sequence[Stage], opts: RunOptions) -> tuple[list[StageResult], dict[str, Any] | None]:
    """Grade ``stages`` in child processes. Returns per-stage results and the child's environment summary.

    Raises NothingSelected when ``opts.keyword`` matches no check.
    """
    results = {s.id: StageResult(s.id, s.title) for s in stages}
    env_info: dict[str, Any] | None = None
    selected_any = False
    titles: list[str] = []
    with tempfile.TemporaryDirectory(prefix="llmfs-grade-") as tmp:
        workdir = Path(tmp)
        missing = [s for s in stages if not s.tests_dir.is_dir()]
        for s in missing:
            results[s.id].error = f"{s.tests_dir.relative_to(ROOT)} is missing: restore it with `git checkout -- {s.tests_dir.relative_to(ROOT)}`"
        live = [s for s in stages if s not in missing]
        groups: list[_Group] = []
        if opts.submission is None:
            if live:
                groups.append(_Group(live, ROOT))
        else:
            from grader.release import SubmissionError, stage_tree

            for i, s in enumerate(live):
                tree = workdir / f"tree-{i}"
                forced: dict[str, str] = {}
                try:
                    stage_tree(s, tree, submission=opts.submission, deps=opts.deps)
                except SubmissionError as exc:
                    forced[s.id] = str(exc)
                    shutil.rmtree(tree, ignore_errors=True)
                    stage_tree(s, tree, submission=workdir / "empty-submission", deps=opts.deps)
                groups.append(_Group([s], tree, forced))
        for g in groups:
            info, sel, names = _grade_group(g, opts, workdir, results)
            env_info = env_info or info
            selected_any |= sel
            titles += names
            if opts.submission is not None:
                shutil.rmtree(g.root, ignore_errors=True)  # the next stage starts from a fresh tree
    if opts.keyword and not selected_any and not any(r.error for r in results.values()):
        raise NothingSelected(titles)
    shown = [s for s in stages if not (opts.keyword and not results[s.id].checks and not results[s.id].error)]
    for r in results.values():
        r.duration = sum(c.duration for c in r.checks)
        reconcile_hints(r.checks)  # named mistakes no passing check rules out; one message per root cause
        if not r.error and not any(c.graded for c in r.checks):
            r.error = "no graded check ran (every check was skipped, or none was collected): there is nothing to award points for"
    return [results[s.id] for s in shown], env_info


def _grade_group(
    g: _Group, opts: RunOptions, workdir: Path, results: dict[str, StageResult]
) -> tuple[dict[str, Any] | None, bool, list[str]]:
    by_id = {s.id: s for s in g.stages}
    budget = {s.id: float(opts.stage_timeout or s.stage_timeout) for s in g.stages}
    spent = {s.id: 0.0 for s in g.stages}
    checks: dict[str, CheckResult] = {}
    order: list[str] = []
    limits: dict[str, float] = {}  # nodeid -> the check's own time limit
    titles: list[str] = []
    env_info: dict[str, Any] | None = None
    targets = [str(g.root / s.tests_dir.relative_to(ROOT)) for s in g.stages]
    restarts = 0
    first = True
    while targets:
        pending_stages = {c.stage for c in checks.values() if c.status == "pending"} if not first else set(by_id)
        # The overall limit also catches what a check's own limit cannot interrupt (a loop in native
        # code with signals blocked) and a hang at start-up or collection. It covers every restart.
        deadline = sum(max(0.0, budget[sid] - spent[sid]) for sid in pending_stages if sid in by_id)
        run = _run_child(targets, opts, max(deadline, 0.5), workdir, g.root)
        env_info = env_info or run.env_info
        if first:
            for err in run.collect_errors:
                sid = err.get("stage")
                if sid in by_id:
                    results[sid].error = cap(f"the course tests in {err.get('path')} could not be loaded: {err.get('hint')}", 500)
            if run.early_import and run.collected is not None:
                # The list of checks must be fixed before any learner code runs; otherwise it cannot be trusted.
                for s in g.stages:
                    results[s.id].error = cap(
                        f"{run.early_import} was imported while the checks were being collected, before the list of "
                        "checks was fixed: the course tests must load stage files inside checks only (a course bug)", 500
                    )
                break
            if run.collected is None:
                why = _death(run) if run.returncode not in (0, 1, 2, 3, 4, 5) else _last_line(run.output_tail)
                for s in g.stages:
                    if not results[s.id].error:
                        results[s.id].error = cap(f"the checks could not start: {why}", 500)
                break
            for item in run.collected:
                sid = item.get("stage")
                if sid not in by_id:
                    continue
                name = cap(str(item.get("name", item["nodeid"])), 300)
                if not item.get("selected", True):
                    titles.append(name)
                    continue
                try:
                    points = float(item.get("points", 1.0))
                except (TypeError, ValueError):
                    points = 1.0
                cell = item.get("cell") if isinstance(item.get("cell"), str) else ""
                checks[item["nodeid"]] = CheckResult(
                    nodeid=item["nodeid"], stage=sid, name=name, status="pending",
                    max_points=points if math.isfinite(points) and points >= 0 else 1.0, cell=cell or "",
                )  # fmt: skip
                titles.append(name)
                order.append(item["nodeid"])
                if isinstance(item.get("timeout"), (int, float)):
                    limits[item["nodeid"]] = float(item["timeout"])
            first = False
        accounted = 0.0
        for nodeid, ev in run.results.items():
            c = checks.get(nodeid)
            if c is not None and c.status == "pending":
                status = str(ev.get("status", "crashed"))
                c.status = status if status in ("passed", "failed", "not implemented", "skipped", "timed out", "crashed") else "crashed"
                c.hint = cap(str(ev.get("hint", "")))
                try:
                    c.duration = max(0.0, float(ev.get("duration", 0.0) or 0.0))
                except (TypeError, ValueError):
                    c.duration = 0.0
                if c.status == "skipped" and not _cell_absent(c.cell, env_info):
                    c.status = "failed"
                    c.hint = cap(f"the check was skipped ({c.hint}) although this machine has what it needs: it counts as failed")
                spent[c.stage] += c.duration
                accounted += c.duration
        pending = [n for n in order if checks[n].status == "pending"]
        culprit = run.running.get("nodeid") if run.running else None
        # The rest of the child's time (start-up, the check that stopped it) goes to the stage it was in.
        rest = max(0.0, run.wall - accounted)
        blame = checks[culprit].stage if culprit in checks else (checks[pending[0]].stage if pending else None)
        if blame in spent:
            spent[blame] += rest
        if not pending:
            break
        # The child stopped with checks left: blame the one that was running.
        death = _death(run)
        if culprit in checks and checks[culprit].status == "pending":
            c = checks[culprit]
            started = float(run.running.get("t", 0.0)) if run.running and isinstance(run.running.get("t"), (int, float)) else 0.0
            c.duration = max(0.0, time.time() - started) if started else 0.0
            limit = limits.get(culprit)
            if run.returncode is None or (limit is not None and c.duration >= 0.95 * limit):
                # Killed at the stage's deadline, or by pytest-timeout's thread method (Windows), which
                # ends the whole process when a check overruns.
                c.status, c.hint = "timed out", "took longer than its time limit and was stopped: an infinite loop, or far too much work"
            elif run.importing:
                c.status = "crashed"
                c.hint = cap(f"importing {run.importing.get('path')} ended the process: {death}")
            else:
                c.status, c.hint = "crashed", f"{death}"
            # A file that kills the process on import kills every check of that stage the same way.
            if run.importing:
                for n in pending:
                    if checks[n].stage == c.stage and checks[n].status == "pending":
                        checks[n].status, checks[n].hint = "crashed", c.hint
        # A stage that used up its overall limit (all restarts together) stops here.
        for n in pending:
            c = checks[n]
            if c.status == "pending" and spent[c.stage] >= budget[c.stage] - 0.5:
                c.status = "timed out"
                c.hint = f"not run: stage {c.stage} used up its overall time limit of {budget[c.stage]:g} s (restarts included; --stage-timeout changes it)"
        pending = [n for n in order if checks[n].status == "pending"]
        restarts += 1
        if not pending:
            break
        if restarts > MAX_RESTARTS:
            for n in pending:
                checks[n].status = "crashed"
                checks[n].hint = f"not run: the checks' process died {restarts} times ({death}); fix the crash above first"
            break
        targets = [str(g.root / n.split("::", 1)[0]) + "::" + n.split("::", 1)[1] if "::" in n else str(g.root / n) for n in pending]
    for n in order:
        c = checks[n]
        if c.stage in g.forced and c.status != "skipped":
            c.status, c.hint = "failed", g.forced[c.stage]
        results[c.stage].checks.append(c)
    return env_info, bool(order), titles


__all__ = ["MAX_HINT", "NothingSelected", "RunOptions", "default_memory_limit", "run_stages"]
