"""Grade a folder of learner checkouts with this repository's checks, and write a summary CSV. No torch.

    python -m grader.batch SUBMISSIONS [STAGE...] --csv summary.csv [--deps solution|mine]
                           [--timeout SECONDS] [--stage-timeout SECONDS] [--results DIR]

Each sub-folder of SUBMISSIONS is one learner: a checkout of the course (its
``stages/<stage>/skeleton/`` files are graded) or a flat folder of stage files
(``positional.py``, ``multi_head.py``, ...). The checks always come from *this*
repository, so a submission cannot change its own tests.

Learners are isolated from one another: each one is graded against a fresh copy of the
grading tree whose hashes are checked against this repository's before grading (the
``tests_modified`` column says when they differ from the released course), each stage in a
tree of its own without its reference (``grader.release.stage_tree``), and nothing a learner's
code starts outlives that learner's grading. One learner's crash or hang never stops the
batch. The CSV (written atomically) has one row per learner; cells that a spreadsheet would
read as a formula (starting with ``=``, ``+``, ``-``, ``@``) are prefixed with ``'``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from grader import integrity
from grader.progress import write_atomic
from shared.registry import DEPS, ROOT, Stage, UnknownStage, select

#: What a learner's grading tree is copied from (the grading machinery and every stage).
_TREE = ("grader", "shared", "stages", "conftest.py", "pyproject.toml")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[no-untyped-def]
        print(f"batch: {message} (see `python -m grader.batch --help`)", file=sys.stderr)
        raise SystemExit(2)


def csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: a leading = + - @ (a formula) is escaped with '."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def fresh_tree(dest: Path) -> None:
    """A copy of this repository's grading tree at ``dest`` (no .git, no caches)."""
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    dest.mkdir(parents=True)
    for name in _TREE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=junk, symlinks=False)
        elif src.is_file():
            shutil.copy2(src, dest / name)


def grade_one(
    sub: Path, stages: list[str], deps: str, timeout: float | None, out_json: Path,
    stage_timeout: float | None = None, expected: dict[str, str] | None = None,
) -> tuple[dict[str, Any] | None, bool]:  # fmt: skip
    """Grade one learner in a fresh grading tree. Returns (the grader's JSON or None, the tree differed from ``expected``)."""
    from grader.runner import _become_subreaper, _children, _reap_orphans

    reaping = _become_subreaper()
    known = _children() if reaping else set()
    with tempfile.TemporaryDirectory(prefix="llmfs-batch-learner-") as tmp:
        tree = Path(tmp) / "course"
        fresh_tree(tree)
        modified = expected is not None and integrity.current(tree) != expected
        cwd = Path(tmp) / "cwd"
        cwd.mkdir()
        cmd = [sys.executable, "-m", "grader", *stages, "--submission", str(sub.resolve()), "--deps", deps,
               "--json", str(out_json.resolve())]  # fmt: skip
        if timeout:
            cmd += ["--timeout", repr(timeout)]
        if stage_timeout:
            cmd += ["--stage-timeout", repr(stage_timeout)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
        env.update(PYTHONPATH=str(tree), NO_COLOR="1", LLMFS_PROGRESS=str(Path(tmp) / "progress.json"))  # never anyone's progress
        out_json.unlink(missing_ok=True)
        try:
            subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        finally:
            _reap_orphans(known)
    try:
        data = json.loads(out_json.read_text(encoding="utf-8"))
        return (data if isinstance(data, dict) and isinstance(data.get("stages"), list) else None), modified
    except (OSError, ValueError):
        return None, modified


def _row(sub: Path, stages: list[Stage], data: dict[str, Any] | None, modified: bool) -> list[Any]:
    row: list[Any] = [sub.name]
    if data is None:
        return row + ["", "", "error"] * len(stages) + [0, "", 0, "yes" if modified else "no", "the grader wrote no result"]
    by_id = {st.get("id"): st for st in data["stages"] if isinstance(st, dict)}
    for s in stages:
        st = by_id.get(s.id, {})
        row += [f"{st.get('points', 0):g}", f"{st.get('max_points', 0):g}", st.get("status", "error")]
    t = data.get("total", {})
    errors = "; ".join(f"{st['id']}: {st['error']}" for st in data["stages"] if isinstance(st, dict) and st.get("error"))
    modified = modified or any(isinstance(st, dict) and st.get("tests_modified") for st in data["stages"])
    return row + [f"{t.get('points', 0):g}", f"{t.get('max_points', 0):g}", t.get("stages_passed", 0), "yes" if modified else "no", errors]


def _seconds(p: argparse.ArgumentParser, flag: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and 0 < value <= 86400):
        p.error(f"{flag} must be a number of seconds between 0 and 86400, got {value!r}")


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m grader.batch", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("submissions", type=Path, help="a folder with one sub-folder per learner")
    p.add_argument("stages", nargs="*", default=["all"], help="stage ids, prefixes or 'all' (default: all)")
    p.add_argument("--csv", type=Path, required=True, help="where to write the summary")
    p.add_argument("--deps", choices=DEPS, default="solution")
    p.add_argument("--timeout", type=float, help="time limit for every check")
    p.add_argument("--stage-timeout", type=float, help="time limit for each stage as a whole")
    p.add_argument("--results", type=Path, help="also keep each learner's full JSON result in this folder")
    args = p.parse_args(argv)
    _seconds(p, "--timeout", args.timeout)
    _seconds(p, "--stage-timeout", args.stage_timeout)
    try:
        stages = select(args.stages)
    except UnknownStage as exc:
        print(f"batch: unknown stage {str(exc)!r}", file=sys.stderr)
        return 2
    if not args.submissions.is_dir():
        print(f"batch: {args.submissions}: no such folder", file=sys.stderr)
        return 2
    if args.csv.is_dir():
        print(f"batch: --csv {args.csv}: is a folder, expected a file path", file=sys.stderr)
        return 2
    subs = sorted(d for d in args.submissions.iterdir() if d.is_dir() and not d.is_symlink() and not d.name.startswith("."))
    if not subs:
        print(f"batch: {args.submissions} has no sub-folders to grade", file=sys.stderr)
        return 2
    header = ["submission"]
    for s in stages:
        header += [f"{s.id} points", f"{s.id} max", f"{s.id} status"]
    header += ["total points", "total max", "stages passed", "tests_modified", "error"]
    rows = []
    try:
        results_dir = args.results or Path(tempfile.mkdtemp(prefix="llmfs-batch-"))
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"batch: --results {args.results}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    expected = integrity.current()  # this repository's grading tree, as it is now
    used: set[str] = set()
    for i, sub in enumerate(subs, 1):
        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in sub.name).lstrip(".") or "submission"
        name = safe if safe not in used else f"{safe}-{i}"
        used.add(name)
        data, modified = grade_one(sub, [s.id for s in stages], args.deps, args.timeout, results_dir / f"{name}.json",
                                   args.stage_timeout, expected)  # fmt: skip
        row = _row(sub, stages, data, modified)
        rows.append(row)
        print(f"[{i}/{len(subs)}] {sub.name!r}: {row[-5]}/{row[-4]} points", flush=True)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows([[csv_cell(v) for v in row] for row in rows])
    try:
        write_atomic(args.csv, buf.getvalue())
    except OSError as exc:
        print(f"batch: could not write {args.csv}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.csv} ({len(rows)} submissions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
