"""Course tests of stage 2.6's machinery: the two-rank harness of the graded checks, and ``train --nproc``.

The harness must turn a rank that raises into one line naming that rank, a rank that hangs into a
failure at its time limit, and a task not written into NotImplementedError; no rank outlives it.
``nox -s train -- --nproc N`` must reject what it cannot do in one line (exit 2), train the 2.3
model on two gloo ranks, and resume that run on one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.registry import ROOT
from shared.testing import GradingError

_SPEC = importlib.util.spec_from_file_location("stage_2_6_checks", ROOT / "stages/2.6-distributed/tests/test_distributed.py")
assert _SPEC and _SPEC.loader
checks = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(checks)


def _one_raises(rank: int, world: int, folder: str) -> None:
    import torch
    import torch.distributed as dist

    if rank == 1:
        raise ValueError("rank one broke\nsecond line")
    dist.all_reduce(torch.ones(3))  # waits for rank 1, which never comes


def _one_hangs(rank: int, world: int, folder: str) -> int:
    if rank == 1:
        time.sleep(600)
    return rank


def _not_written(rank: int, world: int, folder: str) -> None:
    raise NotImplementedError("Task 4: allreduce_gradients")


def _pids(rank: int, world: int, folder: str) -> int:
    return os.getpid()


def test_a_rank_that_raises_fails_the_run_in_one_line() -> None:
    t0 = time.monotonic()
    with pytest.raises(GradingError) as info:
        checks.run_ranks(_one_raises)
    msg = str(info.value)
    assert msg.startswith("rank 1 of 2 raised ValueError: rank one broke"), msg
    assert "\n" not in msg
    assert time.monotonic() - t0 < 15  # the survivor is stopped, not waited for until its timeout


def test_a_rank_that_hangs_fails_at_the_limit() -> None:
    with pytest.raises(GradingError, match="rank 1 of 2 did not finish within 3 s"):
        checks.run_ranks(_one_hangs, init_group=False, limit_s=3)


def test_not_implemented_stays_not_implemented() -> None:
    with pytest.raises(NotImplementedError, match="Task 4"):
        checks.run_ranks(_not_written, init_group=False)


def test_no_rank_outlives_the_harness() -> None:
    pids = checks.run_ranks(_pids, init_group=False)
    assert len(set(pids)) == 2 and os.getpid() not in pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# ----------------------------------------------------------------------------- train --nproc


def _train(home: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    env.update(LLMFS_HOME=str(home), NO_COLOR="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "grader.train", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--nproc", "0"], "--nproc must be between 1 and 64"),
        (["--nproc", "two"], "invalid int value"),
        (["--nproc", "2", "--bench"], "--nproc and --bench"),
        (["--nproc", "2", "--phase", "sft"], "pretraining phase only"),
        (["--nproc", "2", "--device", "mps"], "--nproc with --device mps"),
    ],
)
def test_nproc_bad_input_is_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    r = _train(tmp_path, *args, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr


@pytest.mark.timeout(900)
def test_nproc_2_trains_and_resumes_on_1(tmp_path: Path) -> None:
    common = ["--config", "micro", "--corpus", "lessons", "--version", "solution", "--deps", "solution", "--run", "dp"]
    r = _train(tmp_path, "--nproc", "2", "--steps", "4", *common)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "done: 4 steps on 2 ranks" in r.stdout, r.stdout
    folder = tmp_path / "runs" / "dp"
    m = json.loads((folder / "metrics.json").read_text())
    assert m["nproc"] == 2 and [h["step"] for h in m["history"]] == [1, 2, 3, 4]
    assert m["tokens_per_step"] == 2 * 4 * 2 * 32  # ranks x batch_size x grad_accum x block_size
    r = _train(tmp_path, "--nproc", "1", "--steps", "5", "--resume", *common)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming run 'dp' from step 4" in r.stdout and "done: 5 steps on 1 ranks" in r.stdout, r.stdout
    import torch

    ckpt = torch.load(folder / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 5 and {"model", "optimizer", "tokenizer_sha256", "rng"} <= set(ckpt)


def test_nproc_on_the_untouched_skeleton_says_not_implemented(tmp_path: Path) -> None:
    r = _train(tmp_path, "--nproc", "2", "--config", "micro", "--corpus", "lessons", "--steps", "2")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and "stage 2.6 setup: not implemented yet (Task 1" in lines[0], r.stderr


