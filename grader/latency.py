"""Grading latency, measured as a learner feels it (maintainers' tool; no torch in this process).

    python -m grader.latency [STAGE...] [--repeats 5]

Runs ``nox -s grade -- <stage> --version solution`` for each stage (and ``all``) and
``python -c "import torch"`` as the yardstick, interleaved in the same run, and prints
the median wall time of each and its ratio to the yardstick. Targets (issue "fast
feedback"): every stage <= 2x, stage 1.6 <= 4x, ``all`` <= 6x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from shared.registry import ROOT, STAGES

TARGET = {"1.6": 4.0, "all": 6.0}


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0,):
        raise SystemExit(f"latency: {' '.join(cmd)} exited {proc.returncode}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grader.latency")
    p.add_argument("stages", nargs="*", default=[s.id for s in STAGES] + ["all"])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LLMFS_PROGRESS": os.path.join(tmp, "progress.json"), "NO_COLOR": "1"}
        torch_cmd = [sys.executable, "-c", "import torch"]
        wall(torch_cmd, env)  # warm the file cache
        yard: list[float] = []
        times: dict[str, list[float]] = {s: [] for s in args.stages}
        for _ in range(args.repeats):
            yard.append(wall(torch_cmd, env))
            for s in args.stages:
                times[s].append(wall([sys.executable, "-m", "nox", "-s", "grade", "--", s, "--version", "solution"], env))
    base = statistics.median(yard)
    print(f'python -c "import torch": median {base:.2f} s over {args.repeats} runs')
    worst = 0
    for s, ts in times.items():
        med = statistics.median(ts)
        target = TARGET.get(s, 2.0)
        ok = med / base <= target
        worst |= not ok
        print(f"grade -- {s:<4} --version solution: median {med:.2f} s = {med / base:.2f}x  (target <= {target:g}x) {'ok' if ok else 'OVER'}")
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main())
