"""`nox -s bench -- 2.1`: the tokenizer's benchmark runs (tiny sizes: that it works, not how fast),
its naive algorithm learns the reference's merges, and bad input or an untouched skeleton is one line."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grader.bench_tokenizer import naive_train
from shared.registry import BY_ID, ROOT
from tests.util import skeleton_env

TINY = ("--mb", "0.02", "--vocab", "300", "--naive-kb", "3", "--naive-vocab", "280", "--held-kb", "3", "--repeats", "2")


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    full.update(PYTHONPATH=str(ROOT), NO_COLOR="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "grader.bench", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)


def test_bench_2_1_runs_on_the_solution(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = bench("2.1", "--version", "solution", *TINY, "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "speed-up" in proc.stdout and "bytes per token" in proc.stdout, proc.stdout
    res = json.loads(out.read_text())
    assert res["naive"]["same_merges"] is True  # the reference and the naive algorithm agree, ties included
    assert res["naive"]["speedup"] > 0 and res["big"]["round_trip"] is True
    assert res["big"]["bytes_per_token"] > 1.0 and res["big"]["merges"] == 300 - 257


def test_naive_algorithm_learns_the_reference_merges() -> None:
    spec = importlib.util.spec_from_file_location("course_bench_2_1_solution", BY_ID["2.1"].module_path("solution"))
    assert spec and spec.loader
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    text = "hug pug pun bun hugs<|endoftext|> the cat sat on the mat; the cat ate 12 rats\n\n  x " * 3
    assert naive_train(text, 256 + 30 + 1) == list(ref.BPETokenizer.train(text, 256 + 30 + 1).merges)


def test_bench_2_1_on_the_untouched_skeleton_is_one_line() -> None:
    proc = bench("2.1", *TINY, env=skeleton_env(["2.1"]))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not implemented" in proc.stderr and "--version solution" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["--repeats", "1"], ["--vocab", "100"], ["--mb", "0"], ["--frobnicate"], ["--version", "mine"]])
def test_bench_2_1_bad_input_is_one_line_and_exit_2(args: list[str]) -> None:
    proc = bench("2.1", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
