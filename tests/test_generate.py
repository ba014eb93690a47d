"""`nox -s generate` (stage 2.4's command) and `nox -s bench -- 2.4`: streaming text from a checkpoint,
one-line errors, reproducible seeds, cached == uncached under greedy decoding.

The checkpoints here are made by the test itself, in stage 2.3's format (a tiny random GPT and a
small tokenizer): this checks the command, not what a trained model writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.registry import ROOT


def run(*args: str, cwd: Path = ROOT, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    env.update(PYTHONPATH=str(ROOT), NO_COLOR="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("generate: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from shared import loader  # the reference 2.1 and 2.2, whatever this process's LLMFS_* say

    tok_mod = loader._import("2.1", loader.BY_ID["2.1"].module_path("solution"), "solution")
    gpt_mod = loader._import("2.2", loader.BY_ID["2.2"].module_path("solution"), "solution")
    text = "def add(a, b):\n    return a + b\n" * 8 + "naïve café, 東京 " * 4
    tok = tok_mod.BPETokenizer.train(text, 290)
    cfg = gpt_mod.GPTConfig(vocab_size=tok.vocab_size, block_size=12, d_model=32, n_layers=2, n_heads=4)
    torch.manual_seed(0)
    model = gpt_mod.GPT(cfg)
    with torch.no_grad():  # larger weights than GPT-2's init, so greedy choices are clear-cut
        for p in model.parameters():
            p.mul_(10.0)
    tok_json = tok.to_json()
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    torch.save(
        {"model": model.state_dict(), "optimizer": {}, "step": 0, "config": dataclasses.asdict(cfg), "tokenizer": tok_json,
         "tokenizer_sha256": hashlib.sha256(tok_json.encode("utf-8")).hexdigest(), "rng": {}, "train_config": {}},
        path,
    )  # fmt: skip
    return path


def test_without_a_checkpoint_it_says_how_to_train_one(tmp_path: Path) -> None:
    line = one_line_error(run("grader.generate", "def ", "--run", "no-such-run-xyz"), 2)
    assert "nox -s train" in line and "no-such-run-xyz" in line


@pytest.mark.parametrize(
    "args",
    [
        ["--checkpoint", "/nonexistent/checkpoint.pt"],
        ["--temperature", "-1"],
        ["--temperature", "nan"],
        ["--top-k", "0"],
        ["--top-k", "two"],
        ["--top-p", "1.5"],
        ["--top-p", "0"],
        ["--max-new-tokens", "0"],
        ["--run", "../x"],
        ["--bogus"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str]) -> None:
    one_line_error(run("grader.generate", "x", *args), 2)


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the command's main() here (for errors found before any stage is loaded): its one stderr line."""
    from grader.generate import main

    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err, (code, captured)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("generate: "), captured.err
    return lines[0]


def test_a_damaged_or_foreign_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for path, words in ((junk, "cannot read checkpoint"), (foreign, "not a training checkpoint")):
        line = in_process(capsys, "x", "--checkpoint", str(path), "--version", "solution")
        assert words in line, line


def test_an_unknown_device_is_one_line(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for device in ("tpu", "cuda:7"):
        assert "--device" in in_process(capsys, "x", "--checkpoint", str(checkpoint), "--device", device)


def test_greedy_text_is_the_same_with_and_without_the_cache(checkpoint: Path) -> None:
    """Past block_size (12) too: 30 new tokens."""
    common = ("grader.generate", "def ", "--checkpoint", str(checkpoint), "--temperature", "0", "--max-new-tokens", "30",
              "--version", "solution", "--deps", "solution")  # fmt: skip
    cached, uncached = run(*common), run(*common, "--no-cache")
    assert cached.returncode == 0 and uncached.returncode == 0, cached.stderr + uncached.stderr
    assert cached.stdout.startswith("def ") and len(cached.stdout) > len("def \n")
    assert cached.stdout == uncached.stdout
    assert "KV cache on" in cached.stderr and "KV cache off" in uncached.stderr and "tokens/s" in cached.stderr


def test_the_seed_reproduces_a_sample(checkpoint: Path) -> None:
    common = ("grader.generate", "def ", "--checkpoint", str(checkpoint), "--temperature", "1.2", "--top-k", "50",
              "--top-p", "0.95", "--max-new-tokens", "25", "--version", "solution", "--deps", "solution")  # fmt: skip
    a, b = run(*common, "--seed", "3"), run(*common, "--seed", "3")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout


def test_the_untouched_skeleton_says_not_implemented(checkpoint: Path) -> None:
    line = one_line_error(run("grader.generate", "def ", "--checkpoint", str(checkpoint), "--deps", "solution"), 1)
    assert "not implemented" in line and "Task" in line, line


def test_text_stream_waits_for_the_rest_of_a_character() -> None:
    from grader.generate import TextStream

    class Tok:
        vocab = {0: "é".encode()[:1], 1: "é".encode()[1:], 2: b"a"}
        special_tokens = {"<|endoftext|>": 3}

    s = TextStream(Tok())
    assert s.piece(0) == "" and s.piece(1) == "é" and s.piece(2) == "a" and s.piece(3) == "<|endoftext|>"
    assert s.piece(99) == "\ufffd"  # an id the tokenizer does not know
    assert s.piece(0) == "" and s.flush() == "\ufffd"  # a character left unfinished at the end: U+FFFD


def test_bench_2_4_prints_both_curves(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run("grader.bench", "2.4", "--version", "solution", "--sizes", "8,16", "--prompt-len", "4", "--d-model", "32",
               "--layers", "2", "--heads", "4", "--vocab", "64", "--repeats", "2", "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "speed-up" in proc.stdout and "ms per token" in proc.stdout
    doc = json.loads(out.read_text())
    assert {r["new_tokens"] for r in doc["rows"]} == {8, 16}
    assert all(r["cached_tokens_per_s"] > 0 and r["uncached_tokens_per_s"] > 0 for r in doc["rows"])
    assert len(doc["per_token_ms"]["cached"]) == len(doc["per_token_ms"]["uncached"]) > 0


def test_bench_2_4_bad_input_is_one_line() -> None:
    proc = run("grader.bench", "2.4", "--sizes", "a")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
