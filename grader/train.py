"""``nox -s train``: pretrain your GPT (stage 2.2) with your tokenizer (2.1) and your training code (2.3).

    nox -s train -- [--config tiny|small|micro] [--corpus python|lessons|FILE] [--steps N] [--resume]
                    [--run NAME] [--device auto|cpu|cuda|mps] [--version skeleton|solution]
                    [--deps mine|solution] [--amp | --no-amp] [--overwrite] [--bench]

Writes ``.llmfs/runs/<run>/``: ``checkpoint.pt`` (stage 2.3's checkpoint dict, read by
``nox -s generate`` and by ``--resume``), ``tokenizer.json``, ``metrics.json`` (the loss history,
validation bits per byte, the bigram baseline, throughput) and ``loss.png``. Every file is
written atomically. Ctrl-C finishes the current step, saves a checkpoint and exits with one line
(status 130); ``--resume`` continues bit-identically on the CPU. Bad input (a missing or
too-small corpus, a checkpoint from another config or tokenizer, an unknown device) gets one
line and exit status 2.

``--bench`` times training steps (forward, backward, AdamW) of your GPT against a reference GPT
built from ``torch.nn`` layers with the same shapes, in the same run, and prints tokens/s and
the ratio (median and spread of repeated runs).

The phases of the course share this command: pretraining here; stage 2.5 adds ``--phase sft|dpo``
and stage 2.6 ``--nproc N`` (the ``PHASES`` table and ``run_phase`` are where they plug in).
This is a separate program from the grader: it imports torch (and matplotlib, for the plot only).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.commands import LearnerError, UsageError, call_learner, stop_on_signal
from shared.registry import ROOT

#: Where runs go: .llmfs/runs/<run>/ (LLMFS_HOME moves the whole .llmfs folder, e.g. for the course's tests).
HOME = Path(os.environ.get("LLMFS_HOME") or ROOT / ".llmfs")
RUNS_DIR = HOME / "runs"

#: Presets: the GPT (stage 2.2's GPTConfig fields) and the training run (stage 2.3's TrainConfig fields).
CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    # Seconds on any machine: for smoke tests (and the course's own tests), not for good text.
    "micro": {
        "model": {"vocab_size": 300, "block_size": 32, "d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.0},
        "train": {"batch_size": 4, "block_size": 32, "grad_accum": 2, "max_steps": 20, "max_lr": 3e-3, "min_lr": 3e-4,
                  "warmup_steps": 4, "weight_decay": 0.1, "grad_clip": 1.0, "eval_interval": 5, "eval_iters": 2},
    },
    # 2 CPU cores, about 4 minutes: 0.94M parameters, 2.5M tokens seen.
    "tiny": {
        "model": {"vocab_size": 1024, "block_size": 128, "d_model": 128, "n_layers": 4, "n_heads": 4, "dropout": 0.0,
                  "use_sdpa": True},
        "train": {"batch_size": 16, "block_size": 128, "grad_accum": 1, "max_steps": 1200, "max_lr": 2e-3, "min_lr": 2e-4,
                  "warmup_steps": 100, "weight_decay": 0.1, "grad_clip": 1.0, "eval_interval": 200, "eval_iters": 10},
    },
    # A GPU (or a patient CPU): ~12M parameters.
    "small": {
        "model": {"vocab_size": 4096, "block_size": 256, "d_model": 384, "n_layers": 6, "n_heads": 6, "dropout": 0.1,
                  "use_sdpa": True},
        "train": {"batch_size": 32, "block_size": 256, "grad_accum": 2, "max_steps": 5000, "max_lr": 1e-3, "min_lr": 1e-4,
                  "warmup_steps": 200, "weight_decay": 0.1, "grad_clip": 1.0, "eval_interval": 250, "eval_iters": 20},
    },
}  # fmt: skip

PHASES = ("pretrain", "sft", "dpo")  # sft and dpo: stage 2.5, run by grader/finetune.py


# ----------------------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[no-untyped-def]
        raise UsageError(f"{message} (nox -s train -- --help lists the options)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="nox -s train --", description="Pretrain your GPT on a corpus and save a checkpoint.")
    p.add_argument("--phase", choices=PHASES, default="pretrain", help="pretrain (default), or stage 2.5's sft / dpo (grader/finetune.py)")
    p.add_argument("--config", choices=sorted(CONFIGS), default="tiny", help="model and run preset (default tiny)")
    p.add_argument("--corpus", default="python",
                   help="python (the standard library's source, default), lessons (this course's lessons) or a UTF-8 file")  # fmt: skip
    p.add_argument("--max-bytes", type=int, default=None, help="cap on the python corpus's size (default 4,000,000)")
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps of the run (default: the config's)")
    p.add_argument("--resume", action="store_true", help="continue the run's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over even if the run has a checkpoint")
    p.add_argument("--run", default="default", help="run name: files go to .llmfs/runs/<run>/ (default 'default')")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--amp", dest="amp", action="store_true", default=None, help="mixed precision (default on CUDA/MPS)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="plain float32")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--eval-interval", type=int, default=None, help="steps between validation estimates")
    p.add_argument("--version", choices=("skeleton", "solution"), default="skeleton",
                   help="skeleton: your stage 2.3 code (default); solution: the reference")  # fmt: skip
    p.add_argument("--deps", choices=("mine", "solution"), default="mine",
                   help="mine: your stages 2.1, 2.2 (and 1.x) as well (default); solution: the reference ones")  # fmt: skip
    p.add_argument("--bench", action="store_true", help="time your GPT's training step against a torch.nn reference GPT")
    p.add_argument("--bench-repeats", type=int, default=7, help="--bench: timed rounds (median and spread)")
    p.add_argument("--nproc", type=int, default=None,
                   help="data-parallel ranks through torchrun, running your stage 2.6 code (grader/distributed_train.py)")  # fmt: skip
    from grader.finetune import add_arguments as _finetune_arguments  # stage 2.5: --from, --beta, --lora

    _finetune_arguments(p)
    args = p.parse_args(argv)
    if args.steps is not None and args.steps <= 0:
        raise UsageError(f"--steps must be a positive number of optimizer steps, got {args.steps}")
    if args.max_bytes is not None and args.max_bytes <= 0:
        raise UsageError(f"--max-bytes must be positive, got {args.max_bytes}")
    if args.eval_interval is not None and args.eval_interval < 0:
        raise UsageError(f"--eval-interval must be 0 (never) or positive, got {args.eval_interval}")
    if not args.run or any(c in args.run for c in "/\\") or args.run in (".", ".."):
        raise UsageError(f"--run must be a plain name (no slashes), got {args.run!r}")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other: choose one")
    return args


# ----------------------------------------------------------------------------- loading the stages (learner errors: grader/commands.py)


def _load_stages(version: str, deps: str) -> tuple[Any, Any, Any]:
    """(tokenizer module 2.1, GPT module 2.2, pretraining module 2.3) in the chosen versions."""
    os.environ["LLMFS_VERSION"] = version
    os.environ["LLMFS_DEPS"] = deps
    from shared import loader

    if getattr(loader, "_SETTINGS", None) is not None:  # the loader reads its settings once, at import
        loader._SETTINGS.update({"version": version, "deps": deps})
    try:
        pre = loader.load("2.3")
        return loader.load_dep("2.1"), loader.load_dep("2.2"), pre
    except loader.LearnerCodeError as exc:
        raise LearnerError(str(exc)) from None


# ----------------------------------------------------------------------------- files


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rel(path: Path) -> str:
    """``path`` relative to the repository when inside it (shorter lines), else as it is."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write_json(path: Path, obj: Any) -> None:
    _atomic_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def plot_loss(path: Path, metrics: dict[str, Any]) -> None:
    """The loss curve (training loss per step, validation at each estimate, the bigram line) as a PNG."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # nox logs at DEBUG: keep matplotlib's start-up and font search quiet
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        _draw(path, metrics, plt)
    finally:
        logging.disable(previous)


def _draw(path: Path, metrics: dict[str, Any], plt: Any) -> None:
    """Draw and write the figure (atomically: a temporary file, then a rename)."""
    hist = metrics["history"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if hist:
        ax.plot([h["step"] for h in hist], [h["loss"] for h in hist], lw=0.8, alpha=0.7, label="train (per step)")
    evals = metrics["evals"]
    if evals:
        ax.plot([e["step"] for e in evals], [e["val"] for e in evals], "o-", label="validation")
    if metrics.get("bigram_val_loss") is not None:
        ax.axhline(metrics["bigram_val_loss"], color="grey", ls="--", label="bigram baseline (validation)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(f"run {metrics['run']}: {metrics['config_name']} on {metrics['corpus']['name']}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        plt.close(fig)


# ----------------------------------------------------------------------------- the run


@dataclass
class RunState:
    """Everything a phase needs, prepared once (the tokenizer, the data, the model, the optimizer)."""

    args: argparse.Namespace
    folder: Path
    device: Any
    model: Any
    optimizer: Any
    tokenizer_json: str
    dataset: Any
    gpt_config: dict[str, Any]
    train_cfg: Any
    generator: Any
    amp_dtype: Any
    scaler: Any
    start_step: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


def _pick_device(spec: str) -> Any:
    from shared.loader import load_dep

    env = load_dep("0.2")

    def pick() -> Any:
        try:
            return env.pick_device(None if spec == "auto" else spec)
        except NotImplementedError:  # a RuntimeError too, but the learner's unwritten task, not bad input
            raise
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"--device {spec}: {exc}") from None

    return call_learner("stage 0.2 pick_device", pick)


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Cross-entropy per token (nats) -> bits per byte of text: comparable across tokenizers."""
    return loss_nats / math.log(2) / bytes_per_token


def prepare(args: argparse.Namespace, tok_mod: Any, gpt_mod: Any, pre: Any, say: Callable[[str], None]) -> RunState:
    import torch

    from shared import corpus as corpus_mod

    preset = CONFIGS[args.config]
    folder = RUNS_DIR / args.run
    ckpt_path = folder / "checkpoint.pt"
    device = _pick_device(args.device)
    ckpt: dict[str, Any] | None = None
    if args.resume:
        if not ckpt_path.is_file():
            raise UsageError(f"--resume: no checkpoint at {_rel(ckpt_path)}; train without --resume first")
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a damaged or foreign file
            raise UsageError(f"--resume: cannot read {_rel(ckpt_path)} ({type(exc).__name__}: {exc})") from None
        if not isinstance(ckpt, dict) or not {"model", "optimizer", "step", "config", "tokenizer_sha256"} <= set(ckpt):
            raise UsageError(f"--resume: {_rel(ckpt_path)} is not a training checkpoint of this course")
    elif ckpt_path.is_file() and not args.overwrite:
        raise UsageError(
            f"run {args.run!r} already has a checkpoint ({_rel(ckpt_path)}): add --resume to continue it,"
            " --overwrite to start over, or --run NAME for a new run"
        )

    # --- the corpus, the tokenizer, the ids
    try:
        corpus = corpus_mod.load_corpus(args.corpus, args.max_bytes or corpus_mod.DEFAULT_MAX_BYTES)
    except corpus_mod.CorpusError as exc:
        raise UsageError(str(exc)) from None
    model_kw = dict(preset["model"])
    say(f"corpus {corpus.name}: {len(corpus.documents)} documents, {corpus.n_bytes / 1e6:.2f} MB")
    t0 = time.perf_counter()
    tok, tok_json = call_learner("stage 2.1 BPETokenizer.train/save/load", corpus_mod.tokenizer_for, tok_mod, corpus, model_kw["vocab_size"])
    say(f"tokenizer: vocab {tok.vocab_size} ({time.perf_counter() - t0:.1f} s; cached in .llmfs/data/)")
    t0 = time.perf_counter()
    dataset = call_learner("stage 2.1 BPETokenizer.encode", corpus_mod.build_dataset, tok, tok_json, corpus)
    say(f"data: {len(dataset.train):,} training and {len(dataset.val):,} validation tokens,"
        f" {dataset.bytes_per_token():.2f} bytes/token ({time.perf_counter() - t0:.1f} s; cached)")  # fmt: skip
    model_kw["vocab_size"] = int(tok.vocab_size)  # a tokenizer may stop early (no pair left to merge)

    # --- configs
    train_kw = dict(preset["train"])
    train_kw["seed"] = args.seed
    if args.steps is not None:
        train_kw["max_steps"] = args.steps
    if args.eval_interval is not None:
        train_kw["eval_interval"] = args.eval_interval
    if ckpt is not None:
        saved_train = dict(ckpt.get("train_config") or {})
        if args.steps is None and "max_steps" in saved_train:
            train_kw["max_steps"] = saved_train["max_steps"]
        train_kw["seed"] = saved_train.get("seed", train_kw["seed"])
    T = train_kw["block_size"]
    for split, ids in (("training", dataset.train), ("validation", dataset.val)):
        if len(ids) < T + 1:
            raise UsageError(
                f"corpus {corpus.name} is too small: its {split} split has {len(ids)} tokens, and one batch needs"
                f" block_size + 1 = {T + 1}; use a longer text"
            )
    gpt_config = call_learner("stage 2.2 GPTConfig", gpt_mod.GPTConfig, **model_kw)
    config_dict = dataclasses.asdict(gpt_config)
    tok_sha = hashlib.sha256(tok_json.encode("utf-8")).hexdigest()
    if ckpt is not None:
        if ckpt["config"] != config_dict:
            diff = [f"{k} {ckpt['config'].get(k)!r} vs {v!r}" for k, v in config_dict.items() if ckpt["config"].get(k) != v]
            raise UsageError(
                f"--resume: the checkpoint was trained with another model config ({', '.join(diff[:3])}):"
                " pass the --config it was trained with, or --run NAME for a new run"
            )
        if ckpt["tokenizer_sha256"] != tok_sha:
            raise UsageError(
                "--resume: the checkpoint was trained with another tokenizer (the corpus or your tokenizer code changed):"
                " pass the --corpus it was trained on, or --run NAME for a new run"
            )
        if ckpt["step"] >= train_kw["max_steps"]:
            raise UsageError(f"--resume: the run already finished its {train_kw['max_steps']} steps; pass --steps N (more) to continue")
    train_cfg = call_learner("stage 2.3 TrainConfig", pre.TrainConfig, **train_kw)

    # --- model, optimizer, precision, generator
    torch.manual_seed(train_cfg.seed)
    model = call_learner("stage 2.2 GPT", gpt_mod.GPT, gpt_config).to(device)
    optimizer = call_learner("stage 2.3 make_optimizer", pre.make_optimizer, model, train_cfg.max_lr, train_cfg.weight_decay,
                             (train_cfg.beta1, train_cfg.beta2))  # fmt: skip
    amp = args.amp if args.amp is not None else device.type in ("cuda", "mps")
    amp_dtype, scaler = call_learner("stage 2.3 precision", pre.precision, device, amp)
    generator = torch.Generator().manual_seed(train_cfg.seed)
    start = 0
    folder.mkdir(parents=True, exist_ok=True)
    if ckpt is not None:
        loaded = call_learner("stage 2.3 load_checkpoint", pre.load_checkpoint, ckpt_path, model, optimizer, generator, scaler)
        start = int(loaded["step"])
        say(f"resuming run {args.run!r} from step {start}")
    _atomic_bytes(folder / "tokenizer.json", tok_json.encode("utf-8"))
    state = RunState(args, folder, device, model, optimizer, tok_json, dataset, config_dict, train_cfg, generator, amp_dtype,
                     scaler, start)  # fmt: skip
    old = folder / "metrics.json"
    prior: dict[str, Any] = {}
    if ckpt is not None and old.is_file():
        try:
            prior = json.loads(old.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            prior = {}
    bigram, k = corpus_mod.bigram_loss(dataset.train, dataset.val, model_kw["vocab_size"])
    bpt = dataset.bytes_per_token()
    state.metrics = {
        "run": args.run,
        "phase": args.phase,
        "config_name": args.config,
        "config": config_dict,
        "train_config": dataclasses.asdict(train_cfg),
        "corpus": {"name": corpus.name, "source": corpus.source, "documents": len(corpus.documents), "bytes": corpus.n_bytes,
                   "sha256": corpus.sha256, "train_tokens": len(dataset.train), "val_tokens": len(dataset.val),
                   "val_bytes_per_token": bpt},  # fmt: skip
        "tokenizer_sha256": tok_sha,
        "device": str(device),
        "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype is not None else None,
        "parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        "bigram_val_loss": bigram,
        "bigram_k": k,
        "bigram_val_bpb": bits_per_byte(bigram, bpt),
        "history": [h for h in prior.get("history", []) if h["step"] <= start],
        "evals": [e for e in prior.get("evals", []) if e["step"] <= start],
        "train_seconds": float(prior.get("train_seconds", 0.0)) if ckpt is not None else 0.0,
    }
    return state


def _flops_per_token(cfg: dict[str, Any], n_params_non_emb: int) -> float:
    """Training FLOPs per token: 6 N (forward + backward of the weights) + 12 L T d (attention), PaLM appendix B."""
    return 6.0 * n_params_non_emb + 12.0 * cfg["n_layers"] * cfg["block_size"] * cfg["d_model"]


def _peak_tflops(device: Any, amp_dtype: Any) -> float | None:
    if device.type != "cuda":
        return None
    try:
        from grader.bench import device_peak_tflops

        return device_peak_tflops("cuda", str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "float32")
    except Exception:  # an unknown GPU: no MFU, everything else still works
        return None


def _save(state: RunState, pre: Any, step: int) -> None:
    call_learner("stage 2.3 save_checkpoint", pre.save_checkpoint, state.folder / "checkpoint.pt", state.model, state.optimizer,
                 step, state.gpt_config, state.tokenizer_json, dataclasses.asdict(state.train_cfg), state.generator, state.scaler)  # fmt: skip


def run_pretrain(state: RunState, pre: Any, console: Any, stop: Callable[[], bool]) -> int:
    """The pretraining phase: the learner's ``train`` loop with a progress bar; returns the steps completed."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cfg = state.train_cfg
    m = state.metrics
    bpt = m["corpus"]["val_bytes_per_token"]
    non_emb = m["parameters"] - state.gpt_config["vocab_size"] * state.gpt_config["d_model"] - state.gpt_config["block_size"] * state.gpt_config["d_model"]
    fpt = _flops_per_token(state.gpt_config, max(non_emb, 0))
    peak = _peak_tflops(state.device, state.amp_dtype)
    window: list[tuple[float, int]] = []  # (time, tokens) of recent steps, for tokens/s
    last_val = {"text": "val -"}
    every = max(1, cfg.max_steps // 40)
    t_start = time.perf_counter()
    t_prev = [t_start]
    progress = Progress(
        TextColumn("[bold]step"), MofNCompleteColumn(), BarColumn(bar_width=24), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
        disable=not console.is_terminal,
    )  # fmt: skip

    def on_step(log: Any) -> None:
        now = time.perf_counter()
        window.append((now - t_prev[0], int(log.tokens)))
        t_prev[0] = now
        del window[:-20]
        secs = sum(w[0] for w in window)
        tps = sum(w[1] for w in window) / secs if secs > 0 else 0.0
        m["history"].append({"step": int(log.step), "loss": float(log.loss), "lr": float(log.lr)})
        m["tokens_per_second"] = tps
        mfu = ""
        if peak:
            m["mfu"] = fpt * tps / (peak * 1e12)
            mfu = f"  MFU {100 * m['mfu']:.1f}%"
        if log.val:
            ev = {"step": int(log.step), **{k: float(v) for k, v in log.val.items()}}
            ev["val_bpb"] = bits_per_byte(ev["val"], bpt)
            m["evals"].append(ev)
            last_val["text"] = f"val {ev['val']:.3f} ({ev['val_bpb']:.2f} bits/byte)"
        if not console.is_terminal and (log.val or int(log.step) % every == 0):  # a log file gets lines, not a bar
            console.print(f"step {log.step}/{cfg.max_steps}: train {float(log.loss):.3f}, {last_val['text']}, {tps:,.0f} tokens/s{mfu}")
        progress.update(task, completed=int(log.step), info=f"loss {float(log.loss):.3f}  {last_val['text']}  {tps:,.0f} tok/s{mfu}")

    with progress:
        task = progress.add_task("train", total=cfg.max_steps, completed=state.start_step, info="")
        done = call_learner(
            "stage 2.3 train", pre.train, state.model, state.optimizer, state.dataset.splits(), cfg, device=state.device,
            start_step=state.start_step, generator=state.generator, amp_dtype=state.amp_dtype, scaler=state.scaler,
            on_step=on_step, should_stop=stop,
        )  # fmt: skip
    m["train_seconds"] += time.perf_counter() - t_start
    return int(done)


PHASE_RUNNERS: dict[str, Callable[[RunState, Any, Any, Callable[[], bool]], int]] = {"pretrain": run_pretrain}


def _finish(state: RunState, pre: Any, done: int, console: Any) -> None:
    _save(state, pre, done)
    m = state.metrics
    m["steps"] = done
    m["finished"] = done >= state.train_cfg.max_steps
    if m["evals"]:
        m["val_loss"] = m["evals"][-1]["val"]
        m["val_bpb"] = m["evals"][-1]["val_bpb"]
    write_json(state.folder / "metrics.json", m)
    try:
        plot_loss(state.folder / "loss.png", m)
    except Exception as exc:  # no plot is no reason to lose a run
        console.print(f"(loss.png not written: {type(exc).__name__}: {exc})")


# ----------------------------------------------------------------------------- --bench


def bench(args: argparse.Namespace, gpt_mod: Any, pre: Any, console: Any) -> int:
    """Tokens/s of training steps: your GPT vs a torch.nn reference with the same shapes, interleaved rounds."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    preset = CONFIGS[args.config]
    mk, tk = dict(preset["model"]), preset["train"]
    device = _pick_device(args.device)
    cfg = call_learner("stage 2.2 GPTConfig", gpt_mod.GPTConfig, **mk)
    V, T, d, L, H = mk["vocab_size"], mk["block_size"], mk["d_model"], mk["n_layers"], mk["n_heads"]

    class RefGPT(nn.Module):
        """GPT-2 from torch.nn: nn.TransformerEncoderLayer(norm_first=True, gelu) with a causal mask."""

        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(V, d)
            self.pos = nn.Embedding(T, d)
            layer = nn.TransformerEncoderLayer(d, H, 4 * d, dropout=0.0, activation=lambda x: F.gelu(x, approximate="tanh"),
                                               batch_first=True, norm_first=True)  # fmt: skip
            self.blocks = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
            self.ln_f = nn.LayerNorm(d)
            self.head = nn.Linear(d, V, bias=False)
            self.head.weight = self.tok.weight
            self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(T), persistent=False)

        def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            t = ids.shape[1]
            x = self.tok(ids) + self.pos(torch.arange(t, device=ids.device))  # (B, T, d)
            x = self.blocks(x, mask=self.mask[:t, :t], is_causal=True)  # (B, T, d)
            logits = self.head(self.ln_f(x))  # (B, T, V)
            return logits, F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1))

    torch.manual_seed(0)
    mine = call_learner("stage 2.2 GPT", gpt_mod.GPT, cfg).to(device)
    ref = RefGPT().to(device)
    B = tk["batch_size"]
    x = torch.randint(V, (B, T), device=device)
    y = torch.randint(V, (B, T), device=device)
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-4) for n, m in (("mine", mine), ("ref", ref))}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        elif device.type == "mps":
            torch.mps.synchronize()

    def steps(name: str, model: nn.Module, n: int) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            call_learner("stage 2.3 train_step", pre.train_step, model, opts[name], [(x, y)], lr=1e-4, grad_clip=1.0)
        sync()
        return (time.perf_counter() - t0) / n

    for name, model in (("mine", mine), ("ref", ref)):
        steps(name, model, 2)  # warm-up: allocator, kernel choice
    per = max(1, int(0.5 / max(steps("ref", ref, 1), 1e-4)))  # about half a second per round
    times: dict[str, list[float]] = {"mine": [], "ref": []}
    for _ in range(args.bench_repeats):  # interleaved, so load on a shared machine hits both alike
        for name, model in (("mine", mine), ("ref", ref)):
            times[name].append(steps(name, model, per))
    tokens = B * T

    def line(name: str) -> tuple[float, float]:
        ts = [tokens / t for t in times[name]]
        return statistics.median(ts), (max(ts) - min(ts)) / 2

    (mt, ms), (rt, rs) = line("mine"), line("ref")
    ratios = [a / b for a, b in zip(times["mine"], times["ref"], strict=False)]
    console.print(f"training step (forward, backward, AdamW), config {args.config}: B={B}, T={T}, d={d}, L={L}, H={H}, device {device}")
    console.print(f"  your GPT:        {mt:10,.0f} tokens/s  (± {ms:,.0f}, {args.bench_repeats} rounds of {per} steps)")
    console.print(f"  torch.nn GPT:    {rt:10,.0f} tokens/s  (± {rs:,.0f})  nn.TransformerEncoderLayer(norm_first=True)")
    console.print(f"  time ratio yours / reference: median {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x;"
                  " target <= 1.15x)")  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        args = parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.nproc is not None:  # stage 2.6: relaunch through torchrun (grader/distributed_train.py)
            from grader.distributed_train import launch as _launch_distributed

            return _launch_distributed(args, list(sys.argv[1:] if argv is None else argv), console, err)
        if args.phase in ("sft", "dpo"):  # stage 2.5: its own runner (grader/finetune.py)
            from grader.finetune import run as _run_finetune

            return _run_finetune(args, console, err)
        tok_mod, gpt_mod, pre = _load_stages(args.version, args.deps)
        if args.bench:
            return bench(args, gpt_mod, pre, console)
        state = prepare(args, tok_mod, gpt_mod, pre, console.print)
    except UsageError as exc:
        err.print(f"train: {exc}")
        return 2
    except LearnerError as exc:
        err.print(f"train: {exc}")
        return 1
    except KeyboardInterrupt:
        err.print("train: interrupted before training started; nothing saved")
        return 130

    m = state.metrics
    console.print(
        f"training {m['parameters']:,} parameters on {m['device']}{' (autocast ' + m['amp_dtype'] + ')' if m['amp_dtype'] else ''};"
        f" bigram baseline: validation loss {m['bigram_val_loss']:.3f} = {m['bigram_val_bpb']:.3f} bits/byte. Ctrl-C saves and stops."
    )  # fmt: skip
    try:
        with stop_on_signal() as stop_requested:
            done = PHASE_RUNNERS[args.phase](state, pre, console, stop_requested)
            _finish(state, pre, done, console)
    except LearnerError as exc:
        err.print(f"train: {exc}")
        return 1
    except KeyboardInterrupt:
        err.print("train: interrupted twice: stopped without saving (the last checkpoint, if any, is unchanged)")
        return 130
    rel = _rel(state.folder)
    if stop_requested():
        console.print(f"train: stopped at step {done}; checkpoint saved to {rel}/checkpoint.pt — continue with: nox -s train -- --resume"
                      + (f" --run {args.run}" if args.run != "default" else ""))  # fmt: skip
        return 130
    val = f"validation {m['val_loss']:.3f} = {m['val_bpb']:.3f} bits/byte" if "val_loss" in m else "no validation estimate"
    console.print(
        f"done: {done} steps in {m['train_seconds']:.0f} s, {m.get('tokens_per_second', 0):,.0f} tokens/s; {val}"
        f" (bigram baseline {m['bigram_val_bpb']:.3f}). Wrote {rel}/: checkpoint.pt, metrics.json, loss.png, tokenizer.json."
        ' Try: nox -s generate -- "def "' + (f" --checkpoint {rel}/checkpoint.pt" if args.run != "default" else "")
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
