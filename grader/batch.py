"""Grade a folder of learner checkouts with this repository's checks, and write a summary CSV. No torch.

    python -m grader.batch SUBMISSIONS [STAGE...] --csv summary.csv [--deps solution|mine]
                           [--timeout SECONDS] [--results DIR]

Each sub-folder of SUBMISSIONS is one learner: a checkout of the course (its
``stages/<stage>/skeleton/`` files are graded) or a flat folder of stage files
(``positional.py``, ``multi_head.py``, ...). The checks always come from *this*
repository, so a submission cannot change its own tests. One learner's crash or hang
never stops the batch. The CSV (written atomically) has one row per learner.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from grader.progress import write_atomic
from shared.registry import DEPS, ROOT, UnknownStage, select


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[no-untyped-def]
        print(f"batch: {message} (see `python -m grader.batch --help`)", file=sys.stderr)
        raise SystemExit(2)


def grade_one(sub: Path, stages: list[str], deps: str, timeout: float | None, out_json: Path) -> dict[str, Any] | None:
    cmd = [sys.executable, "-m", "grader", *stages, "--submission", str(sub), "--deps", deps, "--json", str(out_json)]
    if timeout:
        cmd += ["--timeout", str(timeout)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        env["LLMFS_PROGRESS"] = str(Path(tmp) / "progress.json")  # a batch never touches anyone's progress
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        return json.loads(out_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m grader.batch", description=__doc__.split("\n\n")[0])
    p.add_argument("submissions", type=Path, help="a folder with one sub-folder per learner")
    p.add_argument("stages", nargs="*", default=["all"], help="stage ids, prefixes or 'all' (default: all)")
    p.add_argument("--csv", type=Path, required=True, help="where to write the summary")
    p.add_argument("--deps", choices=DEPS, default="solution")
    p.add_argument("--timeout", type=float, help="time limit for every check")
    p.add_argument("--results", type=Path, help="also keep each learner's full JSON result in this folder")
    args = p.parse_args(argv)
    try:
        stages = select(args.stages)
    except UnknownStage as exc:
        print(f"batch: unknown stage {str(exc)!r}", file=sys.stderr)
        return 2
    if not args.submissions.is_dir():
        print(f"batch: {args.submissions}: no such folder", file=sys.stderr)
        return 2
    subs = sorted(d for d in args.submissions.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subs:
        print(f"batch: {args.submissions} has no sub-folders to grade", file=sys.stderr)
        return 2
    header = ["submission"]
    for s in stages:
        header += [f"{s.id} points", f"{s.id} max", f"{s.id} status"]
    header += ["total points", "total max", "stages passed", "error"]
    rows = []
    results_dir = args.results or Path(tempfile.mkdtemp(prefix="llmfs-batch-"))
    results_dir.mkdir(parents=True, exist_ok=True)
    for i, sub in enumerate(subs, 1):
        data = grade_one(sub, [s.id for s in stages], args.deps, args.timeout, results_dir / f"{sub.name}.json")
        row: list[Any] = [sub.name]
        if data is None:
            row += ["", "", "error"] * len(stages) + [0, "", 0, "the grader wrote no result"]
        else:
            by_id = {st["id"]: st for st in data["stages"]}
            for s in stages:
                st = by_id.get(s.id, {})
                row += [f"{st.get('points', 0):g}", f"{st.get('max_points', 0):g}", st.get("status", "error")]
            t = data["total"]
            errors = "; ".join(f"{st['id']}: {st['error']}" for st in data["stages"] if st.get("error"))
            row += [f"{t['points']:g}", f"{t['max_points']:g}", t["stages_passed"], errors]
        rows.append(row)
        print(f"[{i}/{len(subs)}] {sub.name}: {row[-4]}/{row[-3]} points", flush=True)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(args.csv, buf.getvalue())
    print(f"wrote {args.csv} ({len(rows)} submissions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
