"""``nox -s grade -- <stage>... [options]``: the grader's command line (DESIGN §4). No torch.

Exit status: 0 every graded check passed (skips allowed); 1 some did not; 2 usage error;
130 interrupted. Bad input always gets one line, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import difflib
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from grader import integrity, progress
from grader.exports import GRADESCOPE_VISIBILITY, gradescope_json, junit_xml
from grader.report import make_console, print_report
from grader.results import StageResult
from shared.registry import DEPS, ROOT, STAGES, VERSIONS, UnknownStage, select

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad command-line input; the message is one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + traceback-like noise
        raise UsageError(f"{message} (see `nox -s grade -- --help`)")


def _stage_list() -> str:
    return ", ".join(s.id for s in STAGES)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nox -s grade --",
        description="Grade course stages. With no stage, show the stage map and what to do next.",
        epilog=f"Stages: {_stage_list()}; a prefix (1.5 -> 1.5a and 1.5b) or 'all'.",
    )
    p.add_argument("stages", nargs="*", metavar="STAGE", help="stage id, prefix or 'all'")
    p.add_argument("--version", choices=VERSIONS, default="skeleton", help="what to grade (default: skeleton, your work)")
    p.add_argument(
        "--deps", choices=DEPS, default=None,
        help="earlier stages' components: the reference ones (default) or your own ('mine'; the default where the course has no references)",
    )  # fmt: skip
    p.add_argument("--json", metavar="PATH", type=Path, help="write every check's outcome as JSON")
    p.add_argument("-k", dest="keyword", metavar="EXPR", help="only checks whose shown title (or test name) matches this pytest -k expression")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="time limit for every check (overrides the defaults)")
    p.add_argument(
        "--stage-timeout", type=float, metavar="SECONDS",
        help="time limit for each stage as a whole, start-up included (overrides the defaults)",
    )  # fmt: skip
    p.add_argument("--junit", metavar="PATH", type=Path, help="write JUnit XML (one testsuite per stage)")
    p.add_argument("--gradescope", metavar="PATH", type=Path, help="write Gradescope's results.json")
    p.add_argument(
        "--visibility", choices=GRADESCOPE_VISIBILITY, default="visible",
        help="Gradescope visibility of the tests and their output (default: visible)",
    )  # fmt: skip
    p.add_argument(
        "--submission", metavar="DIR", type=Path,
        help="grade the learner files in DIR (a checkout, or a folder of stage files) with this repository's checks",
    )  # fmt: skip
    p.add_argument(
        "--memory-limit", metavar="GIB", default=None,
        help="address-space limit of the checks' process in GiB, or 'off' (default: 16 on Linux without an NVIDIA driver, else off)",
    )  # fmt: skip
    p.add_argument("--verbose", "-v", action="store_true", help="every check, full hints, timings")
    return p


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _summary(r: StageResult, deps: str) -> dict[str, Any]:
    return {
        "status": r.status,
        "points": r.points,
        "max_points": r.max_points,
        "passed": r.count("passed"),
        "checks": sum(1 for c in r.checks if c.graded),
        "deps": deps,
        "when": _now(),
    }


def results_json(results: Sequence[StageResult], env: dict[str, Any] | None, args: argparse.Namespace, exit_code: int) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "created": _now(),
        "version": args.version,
        "deps": args.deps,
        "keyword": args.keyword,
        "submission": str(args.submission) if args.submission else None,
        "environment": {k: v for k, v in (env or {}).items() if k != "event"},
        "stages": [r.to_json() for r in results],
        "total": {
            "points": sum(r.points for r in results),
            "max_points": sum(r.max_points for r in results),
            "stages_passed": sum(1 for r in results if r.passed),
            "stages": len(results),
        },
        "exit_code": exit_code,
    }


def show_map(console: Any) -> int:
    """The stage map: each stage's last result and the next one to do."""
    from rich.table import Table
    from rich.text import Text

    from grader.report import table_box

    try:
        data = progress.read()
    except progress.ProgressError as exc:
        try:
            where = f"moved it to {progress.set_aside()}"
        except OSError as move:
            where = f"could not move it aside ({move.strerror or move})"
        console.print(Text(f"grade: {exc}; {where} - grade a stage to start a new record."))
        return EXIT_USAGE
    stages = data["stages"]
    table = Table(title="LLM from Scratch - stage map", title_justify="left", box=table_box(console))
    table.add_column("stage", no_wrap=True)
    table.add_column("topic")
    table.add_column("your last result (skeleton)", no_wrap=True)
    next_stage = None
    for s in STAGES:
        rec = stages.get(s.id, {}).get("skeleton")
        if rec:
            result = f"{rec['status']} {rec['points']:g}/{rec['max_points']:g} ({rec['when'][:10]})"
        else:
            result = "not graded yet"
        if next_stage is None and (not rec or rec.get("status") != "passed"):
            next_stage = s
            result += "   <- next"
        table.add_row(Text(s.id), Text(s.title), Text(result))  # plain text: the record is not markup
    console.print(table)
    if next_stage is None:
        console.print("Every stage passes. Try `nox -s grade -- all --deps mine` to grade it all on your own components.")
    else:
        console.print(
            Text(
                f"Next: read {next_stage.folder.relative_to(next_stage.folder.parents[1])}/README.md, "
                f"fill in its skeleton, then run `nox -s grade -- {next_stage.id}`."
            )
        )
    return EXIT_OK


def _seconds(flag: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise UsageError(f"--{flag} must be a number of seconds between 0 and {MAX_SECONDS:g} (exclusive of 0), got {value!r}")


def _memory_limit(text: str | None) -> float | None | str:
    """--memory-limit: GiB as a float, None for 'off', or 'default'."""
    if text is None:
        return "default"
    if text.strip().lower() in ("off", "none", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--memory-limit must be a number of GiB or 'off', got {text!r}") from None
    if not (math.isfinite(value) and 1 <= value <= 1 << 20):
        raise UsageError(f"--memory-limit must be between 1 and {1 << 20} GiB (or 'off'), got {text!r}")
    return value


def _check_keyword(expr: str | None) -> None:
    """-k, parsed in this process with pytest's own expression parser, so a typo is a usage error."""
    if expr is None:
        return
    if not expr.strip():
        raise UsageError("-k needs an expression, e.g. -k sinusoidal or -k 'table and not odd'")
    from _pytest.mark.expression import Expression

    try:
        Expression.compile(expr)
    except SyntaxError as exc:
        raise UsageError(f"-k {expr!r} is not a valid expression: {getattr(exc, 'msg', None) or exc}") from None


def _closest(keyword: str, titles: list[str]) -> str:
    words = [w for w in keyword.replace("(", " ").replace(")", " ").split() if w not in ("and", "or", "not")]
    import re

    shown = {re.sub(r" \[[^\]]*\]$", "", t) for t in titles}  # a matrix check once, not once per cell
    scored = sorted(
        shown,
        key=lambda t: (-max((difflib.SequenceMatcher(None, w.lower(), t.lower()).find_longest_match().size for w in words), default=0), t),
    )
    return "; ".join(repr(t) for t in scored[:3])


MAX_SECONDS = 86400.0  # a day: beyond it a limit means nothing (and inf/nan would remove it)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the grader; Ctrl-C at any moment ends it with one line and exit 130 (progress stays valid)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("grade: interrupted; nothing was recorded for this run.", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None = None) -> int:
    console = make_console()
    err = make_console(sys.stderr)
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        if not args.stages:
            return show_map(console)
        try:
            stages = select(args.stages)
        except UnknownStage as exc:
            raise UsageError(f"unknown stage {str(exc)!r}; valid stages: {_stage_list()} (or a prefix like 1.5, or 'all')") from None
        _seconds("timeout", args.timeout)
        _seconds("stage-timeout", args.stage_timeout)
        memory = _memory_limit(args.memory_limit)
        _check_keyword(args.keyword)
        for flag in ("json", "junit", "gradescope"):
            path = getattr(args, flag)
            if path is not None and path.is_dir():
                raise UsageError(f"--{flag} {path}: is a folder, expected a file path")
        if args.submission is not None:
            if not args.submission.is_dir():
                raise UsageError(f"--submission {args.submission}: no such folder")
            if args.version == "solution":
                raise UsageError("--submission grades the submission's files; --version solution does not apply to it")
            args.submission = args.submission.resolve()
    except UsageError as exc:
        err.print(f"grade: {exc}", markup=False)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    from grader.release import references_present
    from grader.runner import NothingSelected, RunOptions, default_memory_limit, run_stages

    warnings: list[str] = []
    if args.deps is None:
        args.deps = "solution"
        if args.submission is None and not references_present(stages):
            args.deps = "mine"  # a learner copy without solutions (python -m grader.release)
            warnings.append("this copy of the course has no reference solutions: earlier stages are graded with your own (--deps mine).")
    elif args.deps == "solution" and args.submission is None and not references_present(stages):
        err.print("grade: --deps solution: this copy of the course has no reference solutions; use --deps mine", markup=False)
        return EXIT_USAGE
    if args.version == "solution" and any(not s.module_path("solution").is_file() for s in stages):
        err.print("grade: --version solution: this copy of the course has no reference solutions", markup=False)
        return EXIT_USAGE
    if args.submission is None:
        try:
            progress.read()
        except progress.ProgressError as exc:
            try:
                warnings.append(f"{exc}; moved it to {progress.set_aside()} and started a new record.")
            except OSError as move:
                warnings.append(f"{exc}; it could not be moved aside ({move.strerror or move}).")
    shared_changed, changed = integrity.modified(stages)
    if shared_changed:
        warnings.append("the shared checking code (conftest.py, shared/, grader/child_plugin.py, grader/runner.py) differs from the released course: every result below is unofficial.")
    for sid in changed:
        folder = next(s for s in stages if s.id == sid).tests_dir.relative_to(ROOT)
        warnings.append(f"the course tests of stage {sid} were changed: its result is unofficial (`git checkout -- {folder}` restores them).")
    opts = RunOptions(
        version=args.version, deps=args.deps, keyword=args.keyword, timeout=args.timeout,
        stage_timeout=args.stage_timeout, submission=args.submission,
        memory_limit_gib=default_memory_limit() if memory == "default" else memory,  # type: ignore[arg-type]
    )  # fmt: skip
    t0 = time.monotonic()
    try:
        results, env = run_stages(stages, opts)
    except NothingSelected as exc:
        err.print(f"grade: -k {args.keyword!r} matches no check of stage(s) {', '.join(s.id for s in stages)}; closest titles: {_closest(args.keyword, exc.titles) or 'none'}", markup=False)
        return EXIT_USAGE
    elapsed = time.monotonic() - t0
    for r in results:
        r.tests_modified = shared_changed or r.id in changed
    print_report(console, results, env, version=args.version if args.submission is None else "submission", deps=args.deps,
                 verbose=args.verbose, warnings=warnings)  # fmt: skip
    code = EXIT_OK if all(r.passed for r in results) else EXIT_FAILED
    # Each export on its own, then the progress record: none of them depends on another, and none
    # of them changes what the checks' exit status says.
    exports: list[tuple[str, Path | None, Any]] = [
        ("--json", args.json, lambda: json.dumps(results_json(results, env, args, code), indent=2) + "\n"),
        ("--junit", args.junit, lambda: junit_xml(results, args.version)),
        ("--gradescope", args.gradescope, lambda: _gradescope(results, args, elapsed)),
    ]
    failed_export = False
    for flag, path, text in exports:
        if path is None:
            continue
        try:
            progress.write_atomic(path, text())
        except OSError as exc:
            err.print(f"grade: could not write {flag} {path}: {exc.strerror or exc}", markup=False)
            failed_export = True
    if args.keyword is None and args.submission is None:  # a partial run (-k) says nothing about the whole stage
        try:
            progress.record({r.id: _summary(r, args.deps) for r in results}, args.version)
        except (OSError, progress.ProgressError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            err.print(f"grade: warning: your progress was not recorded ({why}); the result above stands.", markup=False)
    return EXIT_USAGE if failed_export else code


def _gradescope(results: Sequence[StageResult], args: argparse.Namespace, elapsed: float) -> str:
    summary = "\n".join(f"Stage {r.id}: {r.points:g}/{r.max_points:g} points ({r.status})" for r in results)
    doc = gradescope_json(results, visibility=args.visibility, execution_time=elapsed, summary=summary)
    return json.dumps(doc, indent=2) + "\n"
