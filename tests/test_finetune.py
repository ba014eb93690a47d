"""Stage 2.5's data generator and its phases of ``nox -s train`` / ``nox -s generate -- --compare``.

In-process (one torch import), on a tiny byte-level GPT checkpoint written here, with a few held-out
prompts: seconds, not the minutes of a real run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from shared import finetune_data as fd

# ----------------------------------------------------------------------------- the data


def test_data_is_deterministic_and_heldout_functions_are_unseen() -> None:
    hs = fd.synthetic_headers(300, seed=0)
    a, b = fd.make_data(hs, seed=1), fd.make_data(fd.synthetic_headers(300, seed=0), seed=1)
    assert a.sft_train == b.sft_train and a.pref_heldout == b.pref_heldout
    assert a.sft_heldout and a.sft_train and len(a.pref_train) == len(a.sft_train)
    train_names = {p for p, _ in a.sft_train}
    assert not train_names & {p for p, _ in a.sft_heldout}
    for p, chosen, rejected in a.pref_train:
        assert fd.follows_rule(p, chosen) and not fd.follows_rule(p, rejected)
        assert fd.is_exact(p, chosen) and fd.is_exact(p, rejected)
    for p, r in a.sft_train:
        assert fd.follows_format(p, r) and fd.is_exact(p, r)
    annotated = sum(fd.follows_rule(p, r) for p, r in a.sft_train) / len(a.sft_train)
    assert 0.3 < annotated < 0.7  # both endings are in the SFT data; DPO picks one


def test_headers_come_from_code() -> None:
    text = "def read_config(path, mode):\n    pass\n\ndef _private(x):\n    pass\n    def inner(self, a, b):\n"
    got = fd.headers_from_texts([text, "def read_config(other):\n"])
    assert got == [fd.Header("inner", ("self", "a", "b")), fd.Header("read_config", ("path", "mode"))]


@pytest.mark.parametrize(
    "answer, fmt, exact, rule",
    [("def f(a, b):", True, True, False), ("def f(a, b) -> None:", True, True, True), ("def g(a):", True, False, False),
     ("def f(a, b): pass", False, False, False), ("f(a, b)", False, False, False), ("  def f(a, b):\n", True, True, False)],
)  # fmt: skip
def test_format_checks(answer: str, fmt: bool, exact: bool, rule: bool) -> None:
    prompt = fd.prompt_for(fd.Header("f", ("a", "b")))
    assert (fd.follows_format(prompt, answer), fd.is_exact(prompt, answer), fd.follows_rule(prompt, answer)) == (fmt, exact, rule)


# ----------------------------------------------------------------------------- the commands


@pytest.fixture()
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runs folder with a tiny pretrained checkpoint at runs/t/checkpoint.pt; few held-out prompts."""
    import torch

    from grader import finetune, train
    from shared import loader

    monkeypatch.setattr(train, "RUNS_DIR", tmp_path)
    monkeypatch.setattr(finetune, "RUNS_DIR", tmp_path)
    monkeypatch.setattr(finetune, "HELDOUT", 4)
    monkeypatch.setattr(finetune, "MAX_NEW_TOKENS", 6)
    small = fd.make_data(fd.synthetic_headers(60, seed=0), max_train=16, max_heldout=4, source="test")
    monkeypatch.setattr(finetune, "finetune_data", lambda seed: small)
    monkeypatch.setattr(loader, "_SETTINGS", {**loader._SETTINGS, "impl": {}})
    tok = loader.load_dep("2.1").BPETokenizer({}, {"<|endoftext|>": 256})
    gpt = loader.load_dep("2.2")
    torch.manual_seed(0)
    model = gpt.GPT(gpt.GPTConfig(vocab_size=257, block_size=96, d_model=16, n_layers=1, n_heads=2))
    text = tok.to_json()
    (tmp_path / "t").mkdir()
    torch.save({"model": model.state_dict(), "config": dataclasses.asdict(model.config), "tokenizer": text,
                "tokenizer_sha256": hashlib.sha256(text.encode()).hexdigest(), "step": 0}, tmp_path / "t" / "checkpoint.pt")  # fmt: skip
    return tmp_path


SOL = ["--version", "solution", "--deps", "solution", "--run", "t"]


def test_sft_then_dpo_write_checkpoints_and_numbers(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from grader import generate, train

    assert train.main(["--phase", "sft", "--steps", "3", *SOL]) == 0
    m = json.loads((runs / "t" / "sft" / "finetune.json").read_text())
    for key in ("format_rate", "exact_rate", "rule_rate", "preference_accuracy", "kl"):
        assert key in m["before"] and key in m["after"]
    assert m["before"]["kl"] == pytest.approx(0.0, abs=1e-6) and m["before"]["preference_accuracy"] == 0.5
    assert m["after"]["kl"] > 0 and len(m["history"]) == 3
    out = capsys.readouterr().out
    assert "before:" in out and "after :" in out and "format rate" in out
    assert train.main(["--phase", "dpo", "--steps", "2", "--lora", *SOL]) == 0
    d = json.loads((runs / "t" / "dpo" / "finetune.json").read_text())
    assert d["lora"] and 0 < d["trainable_fraction"] < 0.5 and d["from"].endswith("sft/checkpoint.pt")
    assert d["before"]["preference_accuracy"] == 0.5
    capsys.readouterr()
    # generate reads all three (the LoRA one merged into a plain GPT)
    assert generate.main(["--compare", f"{runs}/t/checkpoint.pt,{runs}/t/sft/checkpoint.pt,{runs}/t/dpo/checkpoint.pt",
                          "--temperature", "0", "--max-new-tokens", "4", "--version", "solution", "--deps", "solution"]) == 0  # fmt: skip
    shown = capsys.readouterr().out
    assert shown.count("--- ") == 3 and "prompt:" in shown
    # an existing phase checkpoint is not overwritten silently; --resume past the end says so
    assert train.main(["--phase", "sft", "--steps", "3", *SOL]) == 2
    assert "exists" in capsys.readouterr().err
    assert train.main(["--phase", "sft", "--steps", "3", "--resume", *SOL]) == 2
    assert "already finished" in capsys.readouterr().err
    assert train.main(["--phase", "sft", "--steps", "4", "--resume", *SOL]) == 0
    assert len(json.loads((runs / "t" / "sft" / "finetune.json").read_text())["history"]) == 4


@pytest.mark.parametrize(
    "argv, needle",
    [(["--phase", "dpo"], "no checkpoint to start from"), (["--phase", "sft", "--beta", "-1"], "--beta must be positive"),
     (["--phase", "sft", "--resume"], "no checkpoint"), (["--phase", "sft", "--from", "/nonexistent.pt"], "no checkpoint"),
     (["--phase", "rlhf"], "invalid choice")],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(runs: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    from grader import train

    assert train.main([*argv, *SOL]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_damaged_start_checkpoint_is_one_line(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from grader import train

    bad = runs / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert train.main(["--phase", "sft", "--from", str(bad), *SOL]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read" in err and len(err.splitlines()) == 1


def test_compare_names_the_missing_phase(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from grader import finetune, generate

    assert generate.main(["--compare", "base,sft", "--run", "t"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--phase sft" in err and len(err.splitlines()) == 1
    assert generate.main(["--compare", "base,,dpo"]) == 2
    assert generate.main(["--compare", "bogus"]) == 2
    assert finetune.compare_paths("base", "t")[0][1] == runs / "t" / "checkpoint.pt"


def test_skeleton_phase_says_not_implemented(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from grader import train

    assert train.main(["--phase", "sft", "--steps", "1", "--version", "skeleton", "--deps", "solution", "--run", "t"]) == 1
    err = capsys.readouterr().err.strip()
    assert "not implemented" in err and "Task" in err and len(err.splitlines()) == 1
