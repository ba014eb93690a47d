"""Course tests for ``nox -s train`` (grader/train.py) and its data machinery (shared/corpus.py).

Everything runs the ``micro`` preset (a 23k-parameter GPT, 32-token context) on a ~15 KB corpus,
for a few steps, with ``.llmfs`` moved to a temporary folder: seconds, not minutes.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from grader import train as train_cli
from shared import corpus
from shared.registry import ROOT

BASE = ["--config", "micro", "--version", "solution", "--deps", "solution"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private .llmfs: runs and the data cache go here. What main() sets for the loader is undone afterwards."""
    from shared import loader

    for var in ("LLMFS_VERSION", "LLMFS_DEPS"):
        monkeypatch.setenv(var, os.environ.get(var, "solution"))
    if isinstance(getattr(loader, "_SETTINGS", None), dict):
        monkeypatch.setattr(loader, "_SETTINGS", dict(loader._SETTINGS))
    monkeypatch.setattr(train_cli, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(corpus, "DATA_DIR", tmp_path / "data")
    return tmp_path


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    """About 15 KB of English: two of the course's lessons."""
    text = "\n".join((ROOT / "stages" / s / "README.md").read_text(encoding="utf-8") for s in ("1.1-positional-embeddings", "1.4-multi-head-attention"))
    path = tmp_path / "book.txt"
    path.write_text(text[:15000], encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = train_cli.main([*BASE, *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _ckpt(home: Path, name: str = "default") -> dict:
    return torch.load(home / "runs" / name / "checkpoint.pt", map_location="cpu", weights_only=False)


# ----------------------------------------------------------------------------- a whole run


def test_a_run_writes_checkpoint_metrics_plot_and_tokenizer(home: Path, text_file: Path, capsys) -> None:
    code, out, err = run(capsys, "--corpus", str(text_file), "--steps", "6", "--eval-interval", "3")
    assert code == 0, out + err
    folder = home / "runs" / "default"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt", "loss.png", "metrics.json", "tokenizer.json"]
    assert (folder / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = _ckpt(home)
    for key in ("model", "optimizer", "step", "config", "tokenizer", "tokenizer_sha256", "rng", "train_config"):
        assert key in ckpt, key
    assert ckpt["step"] == 6 and ckpt["config"]["d_model"] == 32
    assert ckpt["tokenizer"] == (folder / "tokenizer.json").read_text(encoding="utf-8")
    import json

    m = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    assert [e["step"] for e in m["evals"]] == [3, 6] and len(m["history"]) == 6 and m["finished"]
    assert m["val_bpb"] == pytest.approx(m["val_loss"] / math.log(2) / m["corpus"]["val_bytes_per_token"])
    assert 0 < m["bigram_val_bpb"] < 8 and m["tokens_per_second"] > 0
    assert "done: 6 steps" in out and "bits/byte" in out


def test_resume_continues_bit_identically(home: Path, text_file: Path, capsys) -> None:
    c = ["--corpus", str(text_file), "--eval-interval", "4"]
    assert run(capsys, *c, "--steps", "8", "--run", "straight")[0] == 0
    assert run(capsys, *c, "--steps", "4", "--run", "halves")[0] == 0
    code, out, err = run(capsys, *c, "--steps", "8", "--run", "halves", "--resume")
    assert code == 0, out + err
    assert "resuming run 'halves' from step 4" in out
    a, b = _ckpt(home, "straight"), _ckpt(home, "halves")
    assert b["step"] == 8
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    import json

    hist = json.loads((home / "runs" / "halves" / "metrics.json").read_text())["history"]
    assert [h["step"] for h in hist] == list(range(1, 9))  # the resumed run keeps the first half's history


# ----------------------------------------------------------------------------- bad input: one line, exit 2


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--corpus", "/nonexistent/book.txt"], "does not exist"),
        (["--device", "tpu"], "unknown device"),
        (["--device", "cuda:7" if torch.cuda.is_available() else "cuda"], "not available"),
        (["--steps", "0"], "--steps must be a positive"),
        (["--resume"], "no checkpoint"),
        (["--config", "huge"], "invalid choice"),
        (["--frobnicate"], "unrecognized arguments"),
        (["--run", "../elsewhere"], "plain name"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(home: Path, text_file: Path, capsys, argv: list[str], needle: str) -> None:
    extra = [] if "--corpus" in argv else ["--corpus", str(text_file)]
    code, out, err = run(capsys, *extra, *argv)
    assert code == 2, out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


def test_corpus_problems_are_one_line(home: Path, tmp_path: Path, capsys) -> None:
    small = tmp_path / "small.txt"
    small.write_text("def f(x):\n    return x\n" * 3, encoding="utf-8")
    code, _, err = run(capsys, "--corpus", str(small))
    assert code == 2 and "too small" in err and "block_size + 1 = 33" in err and len(err.strip().splitlines()) == 1, err
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café ".encode("latin-1") * 100)
    code, _, err = run(capsys, "--corpus", str(latin))
    assert code == 2 and "not UTF-8" in err, err
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    code, _, err = run(capsys, "--corpus", str(empty))
    assert code == 2 and "empty" in err, err


def test_checkpoints_from_another_config_or_tokenizer_are_refused(home: Path, text_file: Path, tmp_path: Path, capsys) -> None:
    assert run(capsys, "--corpus", str(text_file), "--steps", "2")[0] == 0
    code, _, err = run(capsys, "--corpus", str(text_file), "--steps", "2")
    assert code == 2 and "already has a checkpoint" in err and "--resume" in err, err
    code, _, err = run(capsys, "--corpus", str(text_file), "--steps", "4", "--resume", "--config", "tiny")
    assert code == 2 and "another model config" in err, err
    other = tmp_path / "other.txt"
    other.write_text(text_file.read_text(encoding="utf-8")[::-1], encoding="utf-8")
    code, _, err = run(capsys, "--corpus", str(other), "--steps", "4", "--resume")
    assert code == 2 and "another tokenizer" in err, err
    code, _, err = run(capsys, "--corpus", str(text_file), "--steps", "2", "--resume")
    assert code == 2 and "already finished" in err, err
    assert run(capsys, "--corpus", str(text_file), "--steps", "2", "--overwrite")[0] == 0


def test_unfinished_learner_code_is_one_line_exit_1(home: Path, text_file: Path, capsys) -> None:  # noqa: ARG001
    code = train_cli.main(["--config", "micro", "--corpus", str(text_file), "--version", "skeleton", "--deps", "solution"])
    err = capsys.readouterr().err
    assert code == 1 and "not implemented yet" in err and "Task" in err and len(err.strip().splitlines()) == 1, err


# ----------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(tmp_path: Path, text_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    env.update(LLMFS_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "grader.train", *BASE, "--corpus", str(text_file), "--steps", "100000", "--eval-interval", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in proc.stdout:  # wait until training has started
            if "Ctrl-C saves" in line or time.monotonic() > deadline:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "checkpoint saved" in out and "--resume" in out, out + err
    ckpt = torch.load(tmp_path / "home" / "runs" / "default" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert 0 <= ckpt["step"] < 100000
    res = subprocess.run([*cmd[:-4], "--steps", str(ckpt["step"] + 2), "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and f"from step {ckpt['step']}" in res.stdout, res.stdout + res.stderr


# ----------------------------------------------------------------------------- the data machinery


def test_bigram_baseline_equals_its_formula() -> None:
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 5, 400), rng.integers(0, 5, 100)
    nll, k = corpus.bigram_loss(train, val, 5, ks=(0.5,))
    counts = np.zeros((5, 5))
    for a, b in zip(train[:-1], train[1:], strict=False):
        counts[a, b] += 1
    p = (counts + 0.5) / (counts.sum(1, keepdims=True) + 0.5 * 5)
    expected = -np.mean([math.log(p[a, b]) for a, b in zip(val[:-1], val[1:], strict=False)])
    assert k == 0.5 and nll == pytest.approx(expected, rel=1e-12)


def test_the_cache_is_keyed_by_corpus_and_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text_file: Path) -> None:
    monkeypatch.setenv("LLMFS_VERSION", "solution")
    from shared.loader import load_dep

    tok_mod = load_dep("2.1")
    c = corpus.load_corpus(str(text_file))
    tok, js = corpus.tokenizer_for(tok_mod, c, 300, tmp_path)
    first = corpus.build_dataset(tok, js, c, tmp_path)
    again = corpus.build_dataset(tok, js, c, tmp_path)
    assert again.folder == first.folder and np.array_equal(again.train, first.train)
    assert isinstance(first.train, np.memmap) and first.train.dtype == np.uint16
    assert tok.decode([int(i) for i in first.val]).startswith(text_file.read_text(encoding="utf-8")[int(len(text_file.read_text(encoding="utf-8")) * 0.9):][:50])
    text_file.write_text(text_file.read_text(encoding="utf-8") + "\nOne more line.", encoding="utf-8")
    c2 = corpus.load_corpus(str(text_file))
    tok2, js2 = corpus.tokenizer_for(tok_mod, c2, 300, tmp_path)
    assert corpus.build_dataset(tok2, js2, c2, tmp_path).folder != first.folder
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"


def test_the_default_corpus_is_the_standard_library_in_a_fixed_order() -> None:
    a = corpus.load_corpus("python", max_bytes=300_000)
    b = corpus.load_corpus("python", max_bytes=300_000)
    assert a.sha256 == b.sha256 and 0 < a.n_bytes <= 300_000
    names = [n for n, _ in a.documents]
    assert names == sorted(names) and all(n.endswith(".py") and "test" not in n.split("/")[:-1] for n in names)
    train, val = corpus.split_documents(a)
    assert train and val and len(train) + len(val) == len(a.documents)


def test_bench_compares_with_the_torch_nn_reference(home: Path, capsys) -> None:  # noqa: ARG001 (home: env restored)
    code = train_cli.main([*BASE, "--bench", "--bench-repeats", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "torch.nn GPT" in out and "time ratio yours / reference: median" in out, out
