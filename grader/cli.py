"""``nox -s grade -- <stage>... [options]``: the grader's command line (DESIGN §4). No torch.

Exit status: 0 every graded check passed (skips allowed); 1 some did not; 2 usage error;
130 interrupted. Bad input always gets one line, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from grader import integrity, progress
from grader.exports import GRADESCOPE_VISIBILITY, gradescope_json, junit_xml
from grader.report import make_console, print_report
from grader.results import StageResult
from shared.registry import DEPS, ROOT, STAGES, VERSIONS, Stage, UnknownStage, select

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
        "--deps", choices=DEPS, default="solution",
        help="earlier stages' components: the reference ones (default) or your own ('mine')",
    )  # fmt: skip
    p.add_argument("--json", metavar="PATH", type=Path, help="write every check's outcome as JSON")
    p.add_argument("-k", dest="keyword", metavar="EXPR", help="only checks matching this pytest -k expression")
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

    from grader.report import table_box

    try:
        data = progress.read()
    except progress.ProgressError as exc:
        where = progress.set_aside()
        console.print(f"grade: {exc}; moved it to {where} - grade a stage to start a new record.")
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
            result = f"{rec.get('status')} {rec.get('points', 0):g}/{rec.get('max_points', 0):g} ({str(rec.get('when', ''))[:10]})"
        else:
            result = "not graded yet"
        if next_stage is None and (not rec or rec.get("status") != "passed"):
            next_stage = s
            result += "   <- next"
        table.add_row(s.id, s.title, result)
    console.print(table)
    if next_stage is None:
        console.print("Every stage passes. Try `nox -s grade -- all --deps mine` to grade it all on your own components.")
    else:
        console.print(
            f"Next: read {next_stage.folder.relative_to(next_stage.folder.parents[1])}/README.md, "
            f"fill in its skeleton, then run `nox -s grade -- {next_stage.id}`."
        )
    return EXIT_OK


def submission_dir(submission: Path, stage: Stage) -> Path:
    """Where a submission keeps ``stage``'s file: a checkout's skeleton folder, or the folder itself."""
    in_checkout = submission / "stages" / stage.folder.name / "skeleton"
    return in_checkout if (in_checkout / f"{stage.module}.py").is_file() else submission


def _submission_env(submission: Path) -> dict[str, str]:
    sub = submission.resolve()
    return {"LLMFS_IMPL_" + s.id.replace(".", "_"): str(submission_dir(sub, s)) for s in STAGES}


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
        for flag in ("timeout", "stage_timeout"):
            value = getattr(args, flag)
            if value is not None and value <= 0:
                raise UsageError(f"--{flag.replace('_', '-')} must be positive, got {value:g}")
        for flag in ("json", "junit", "gradescope"):
            path = getattr(args, flag)
            if path is not None and path.is_dir():
                raise UsageError(f"--{flag} {path}: is a folder, expected a file path")
        if args.submission is not None and not args.submission.is_dir():
            raise UsageError(f"--submission {args.submission}: no such folder")
    except UsageError as exc:
        err.print(f"grade: {exc}", markup=False)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    from grader.runner import RunOptions, run_stages

    warnings: list[str] = []
    try:
        progress.read()
    except progress.ProgressError as exc:
        where = progress.set_aside()
        warnings.append(f"{exc}; moved it to {where} and started a new record.")
    shared_changed, changed = integrity.modified(stages)
    if shared_changed:
        warnings.append("the shared checking code (conftest.py, shared/, grader/child_plugin.py) differs from the released course: every result below is unofficial.")
    for sid in changed:
        folder = next(s for s in stages if s.id == sid).tests_dir.relative_to(ROOT)
        warnings.append(f"the course tests of stage {sid} were changed: its result is unofficial (`git checkout -- {folder}` restores them).")
    env_extra = _submission_env(args.submission) if args.submission else {}
    opts = RunOptions(
        version=args.version, deps=args.deps, keyword=args.keyword, timeout=args.timeout,
        stage_timeout=args.stage_timeout, env=env_extra,
    )  # fmt: skip
    t0 = time.monotonic()
    results, env = run_stages(stages, opts)
    elapsed = time.monotonic() - t0
    for r in results:
        r.tests_modified = shared_changed or r.id in changed
    print_report(console, results, env, version=args.version, deps=args.deps, verbose=args.verbose, warnings=warnings)
    code = EXIT_OK if all(r.passed for r in results) else EXIT_FAILED
    try:
        if args.keyword is None and args.submission is None:  # a partial run (-k) says nothing about the whole stage
            progress.record({r.id: _summary(r, args.deps) for r in results}, args.version)
        if args.json is not None:
            progress.write_atomic(args.json, json.dumps(results_json(results, env, args, code), indent=2) + "\n")
        if args.junit is not None:
            progress.write_atomic(args.junit, junit_xml(results, args.version))
        if args.gradescope is not None:
            summary = "\n".join(f"Stage {r.id}: {r.points:g}/{r.max_points:g} points ({r.status})" for r in results)
            doc = gradescope_json(results, visibility=args.visibility, execution_time=elapsed, summary=summary)
            progress.write_atomic(args.gradescope, json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        err.print(f"grade: could not write results: {exc}", markup=False)
        return EXIT_USAGE
    return code
