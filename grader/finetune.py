"""Stage 2.5's phases of ``nox -s train``: supervised finetuning and DPO on your pretrained GPT.

    nox -s train -- --phase sft [--from CHECKPOINT] [--run NAME] [--steps N] [--lora] [--resume | --overwrite]
    nox -s train -- --phase dpo [--from CHECKPOINT] [--run NAME] [--steps N] [--beta B] [--lora] [--resume | --overwrite]
    nox -s generate -- --compare base,sft,dpo ["prompt"] [--run NAME] [--temperature 0]

``--phase sft`` starts from ``--from`` (default: the pretrained ``.llmfs/runs/<run>/checkpoint.pt``) and
writes ``.llmfs/runs/<run>/sft/``; ``--phase dpo`` starts from the SFT checkpoint (default
``.llmfs/runs/<run>/sft/checkpoint.pt``), which is also its frozen reference, and writes
``.llmfs/runs/<run>/dpo/``. Each folder holds ``checkpoint.pt`` (stage 2.3's checkpoint dict: ``nox -s
generate`` reads it) and ``finetune.json``: the held-out format-following rate, preference accuracy,
rule rate and KL to the starting model, before and after the phase, the loss history and the data's
sizes. The same numbers are printed at the end. Every file is written atomically; Ctrl-C finishes the
step, saves and exits 130 (``--resume`` continues); bad input is one line and exit status 2, code that
is not implemented or raises one line and exit status 1.

The data are stage 2.5's (``shared.finetune_data``): the standard library's function headers, so the
task is the same whichever corpus you pretrained on. ``--lora`` trains rank-8 adapters on the
attention projections only (your ``add_lora``) and merges them into the weights before saving, so
the checkpoint is a plain GPT again.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.commands import stop_on_signal
from grader.train import RUNS_DIR, LearnerError, UsageError, _rel, call_learner, write_json

#: Each phase's defaults: optimizer steps, batch size (pairs), AdamW learning rate.
DEFAULTS: dict[str, dict[str, float]] = {
    "sft": {"steps": 600, "batch": 16, "lr": 1e-3, "lora_lr": 3e-3},
    "dpo": {"steps": 20, "batch": 16, "lr": 5e-5, "lora_lr": 2e-4},
}
HELDOUT = 100  # held-out prompts evaluated (greedy generation of each)
MAX_NEW_TOKENS = 40  # a header is under 30 tokens of a 1024-token vocabulary
LORA_R, LORA_ALPHA = 8, 16.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``nox -s train`` gains for these phases (called from grader/train.py's parser)."""
    p.add_argument("--from", dest="from_checkpoint", default=None,
                   help="sft/dpo: the checkpoint to start from (default: the run's pretrained one for sft, its sft one for dpo)")  # fmt: skip
    p.add_argument("--beta", type=float, default=0.1, help="dpo: how far the policy may move from the reference (default 0.1)")
    p.add_argument("--lora", action="store_true", help="sft/dpo: train LoRA adapters on attention only (stage 2.5 Task 9)")


# ----------------------------------------------------------------------------- files


def _save_torch(path: Path, obj: Any) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path, what: str) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise UsageError(f"{what}: no checkpoint at {_rel(path)}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # your own file (it holds RNG states)
    except Exception as exc:
        raise UsageError(f"{what}: cannot read {_rel(path)} ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or not {"model", "config", "tokenizer"} <= set(ckpt):
        raise UsageError(f"{what}: {_rel(path)} is not a checkpoint of this course (no model / config / tokenizer)")
    if not isinstance(ckpt["tokenizer"], str) or not isinstance(ckpt["config"], dict):
        raise UsageError(f"{what}: {_rel(path)} is damaged (tokenizer or config of the wrong type)")
    return ckpt


# ----------------------------------------------------------------------------- stages and models


@dataclass
class Stages:
    tok: Any  # 2.1
    gpt: Any  # 2.2
    ft: Any  # 2.5


def load_stages(version: str, deps: str) -> Stages:
    os.environ["LLMFS_VERSION"] = version
    os.environ["LLMFS_DEPS"] = deps
    from shared import loader

    if getattr(loader, "_SETTINGS", None) is not None:
        loader._SETTINGS.update({"version": version, "deps": deps})
    try:
        ft = loader.load("2.5")
        return Stages(loader.load_dep("2.1"), loader.load_dep("2.2"), ft)
    except loader.LearnerCodeError as exc:
        raise LearnerError(str(exc)) from None


def build(ckpt: dict[str, Any], path: Path, st: Stages, device: Any) -> tuple[Any, Any]:
    """(GPT with the checkpoint's weights on ``device``, tokenizer)."""
    tok = call_learner("stage 2.1 BPETokenizer.from_json", st.tok.BPETokenizer.from_json, ckpt["tokenizer"])
    try:
        cfg = st.gpt.GPTConfig(**ckpt["config"])
    except TypeError as exc:
        raise UsageError(f"{_rel(path)}: its config does not fit GPTConfig: {exc}") from None
    model = call_learner("stage 2.2 GPT", st.gpt.GPT, cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as exc:
        raise UsageError(f"{_rel(path)}: its weights do not fit the GPT of its config ({str(exc).splitlines()[0][:200]})") from None
    if "<|endoftext|>" not in getattr(tok, "special_tokens", {}):
        raise UsageError(f"{_rel(path)}: its tokenizer has no <|endoftext|> token, the chat template's separator")
    return model.to(device), tok


def merge_lora(model: Any) -> int:
    """Fold every LoRA adapter into its base weight (W += (alpha / r) B A) and put the base back: a plain GPT."""
    import torch

    found = [(n, m) for n, m in model.named_modules() if all(hasattr(m, a) for a in ("lora_A", "lora_B", "base"))]
    with torch.no_grad():
        for name, mod in found:
            scaling = getattr(mod, "scaling", None) or mod.alpha / mod.r
            mod.base.weight += scaling * (mod.lora_B @ mod.lora_A)  # (out, r) @ (r, in)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, mod.base)
    model.requires_grad_(True)
    return len(found)


# ----------------------------------------------------------------------------- data and evaluation


def finetune_data(seed: int) -> Any:
    from shared import corpus as corpus_mod
    from shared import finetune_data as fd

    try:
        corpus = corpus_mod.load_corpus("python")
        headers = fd.headers_from_texts(text for _, text in corpus.documents)
        source = f"function headers of {corpus.source or 'the Python standard library'}"
    except corpus_mod.CorpusError:
        headers = []
    if len(headers) < 200:
        headers, source = fd.synthetic_headers(400, seed), "synthetic headers (word lists)"
    return fd.make_data(headers, max_heldout=HELDOUT, seed=seed, source=source)


def _fit(data: Any, tok: Any, block_size: int) -> None:
    """Keep the examples whose template (prompt, the longer answer, two separators) fits in block_size tokens."""

    def fits(prompt: str, *answers: str) -> bool:
        n = len(call_learner("stage 2.1 encode", tok.encode, prompt)) + max(len(tok.encode(a)) for a in answers) + 2
        return n <= block_size

    for name in ("sft_train", "sft_heldout", "pref_train", "pref_heldout"):
        setattr(data, name, [ex for ex in getattr(data, name) if fits(ex[0], *ex[1:])])
    if not data.sft_train or not data.sft_heldout:
        raise UsageError(f"the model's block_size {block_size} is too short for the finetuning examples (a prompt and its answer)")


def evaluate(st: Stages, policy: Any, reference: Any, tok: Any, data: Any, device: Any) -> dict[str, float]:
    """Held-out format-following rate and rule rate (greedy answers), preference accuracy and KL."""
    import torch

    from shared import finetune_data as fd

    policy.eval()
    fmt = rule = exact = 0
    samples = []
    for prompt, _ in data.sft_heldout:
        answer = call_learner("stage 2.5 greedy_response", st.ft.greedy_response, policy, tok, prompt, MAX_NEW_TOKENS)
        fmt += fd.follows_format(prompt, answer)
        rule += fd.follows_rule(prompt, answer)
        exact += fd.is_exact(prompt, answer)
        if len(samples) < 3:
            samples.append({"prompt": prompt, "answer": answer})
    n = max(1, len(data.sft_heldout))
    accs, kls, rows = [], [], 0
    with torch.no_grad():
        for i in range(0, len(data.pref_heldout), 32):
            chunk = data.pref_heldout[i : i + 32]
            ids, labels = call_learner("stage 2.5 dpo_batch", st.ft.dpo_batch, tok, chunk)
            ids, labels = ids.to(device), labels.to(device)
            accs.append(len(chunk) * call_learner("stage 2.5 preference_accuracy", st.ft.preference_accuracy, policy, reference, ids, labels))
            kls.append(2 * len(chunk) * call_learner("stage 2.5 kl_to_reference", st.ft.kl_to_reference, policy, reference, ids, labels))
            rows += len(chunk)
    return {"format_rate": fmt / n, "rule_rate": rule / n, "exact_rate": exact / n, "preference_accuracy": sum(accs) / max(1, rows),
            "kl": sum(kls) / max(1, 2 * rows), "samples": samples}  # fmt: skip


def _line(tag: str, m: dict[str, Any]) -> str:
    return (f"{tag}: held-out format rate {100 * m['format_rate']:.0f}%, rule (-> None) rate {100 * m['rule_rate']:.0f}%,"
            f" exact name and arguments {100 * m['exact_rate']:.0f}%, preference accuracy {100 * m['preference_accuracy']:.0f}%, KL to the start {m['kl']:.3f} nats/response")  # fmt: skip


# ----------------------------------------------------------------------------- the phase


def run(args: argparse.Namespace, console: Any, err: Any) -> int:
    """``nox -s train -- --phase sft|dpo``: returns the exit status."""
    try:
        state = _prepare(args, console)
    except UsageError as exc:
        err.print(f"train: {exc}")
        return 2
    except LearnerError as exc:
        err.print(f"train: {exc}")
        return 1
    except KeyboardInterrupt:
        err.print("train: interrupted before training started; nothing saved")
        return 130
    try:
        with stop_on_signal() as stop:
            done = _train(state, console, stop)
            _finish(state, done, console, stopped=stop())
    except LearnerError as exc:
        err.print(f"train: {exc}")
        return 1
    except KeyboardInterrupt:
        err.print("train: interrupted twice: stopped without saving (the last checkpoint, if any, is unchanged)")
        return 130
    if stop():
        run_opt = f" --run {args.run}" if args.run != "default" else ""
        console.print(f"train: stopped at step {done}; saved to {_rel(state.folder)}/checkpoint.pt — continue with:"
                      f" nox -s train -- --phase {args.phase} --resume{run_opt}")  # fmt: skip
        return 130
    return 0


@dataclass
class PhaseState:
    args: argparse.Namespace
    st: Stages
    folder: Path
    device: Any
    policy: Any
    reference: Any
    tok: Any
    data: Any
    optimizer: Any
    steps: int
    batch: int
    start_step: int
    base_ckpt: dict[str, Any]
    from_path: Path
    metrics: dict[str, Any]
    rng: random.Random


def _prepare(args: argparse.Namespace, console: Any) -> PhaseState:
    import torch

    from grader.train import _pick_device

    phase = args.phase
    d = DEFAULTS[phase]
    if args.beta is not None and not args.beta > 0:
        raise UsageError(f"--beta must be positive, got {args.beta}")
    folder = RUNS_DIR / args.run / phase
    out = folder / "checkpoint.pt"
    own: dict[str, Any] | None = None
    if args.resume:
        own = _read(out, "--resume")
        if own.get("phase") != phase or "optimizer" not in own:
            raise UsageError(f"--resume: {_rel(out)} is not a {phase} checkpoint of this command")
        if own.get("lora"):
            raise UsageError("--resume: a --lora run is saved with its adapters merged; start it again with --overwrite")
    elif out.is_file() and not args.overwrite:
        raise UsageError(f"{_rel(out)} exists: add --resume to continue it, --overwrite to start over, or --run NAME")
    default_from = RUNS_DIR / args.run / ("checkpoint.pt" if phase == "sft" else "sft/checkpoint.pt")
    from_path = Path(own["from"]) if own else Path(args.from_checkpoint) if args.from_checkpoint else default_from
    if not from_path.is_file():
        how = "nox -s train" if phase == "sft" else "nox -s train -- --phase sft"
        raise UsageError(f"--phase {phase}: no checkpoint to start from at {_rel(from_path)}; make one with `{how}` or pass --from PATH")
    base = _read(from_path, f"--phase {phase} --from")
    device = _pick_device(args.device)
    st = load_stages(args.version, args.deps)
    torch.manual_seed(args.seed)
    policy, tok = build(base, from_path, st, device)
    reference = call_learner("stage 2.5 frozen_reference", st.ft.frozen_reference, policy)
    fraction = 1.0
    if args.lora:
        fraction = call_learner("stage 2.5 add_lora", st.ft.add_lora, policy, LORA_R, LORA_ALPHA, ("attn",))
        policy.to(device)
    if own:
        try:
            policy.load_state_dict(own["model"])
        except (RuntimeError, KeyError) as exc:
            raise UsageError(f"--resume: {_rel(out)} does not fit the model ({str(exc).splitlines()[0][:200]})") from None
    params = [p for p in policy.parameters() if p.requires_grad]
    lr = d["lora_lr"] if args.lora else d["lr"]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    steps = args.steps or int(d["steps"])
    start = 0
    if own:
        optimizer.load_state_dict(own["optimizer"])
        start = int(own["step"])
        if start >= steps:
            raise UsageError(f"--resume: the run already finished its {steps} steps; pass --steps N (more) to continue")
    console.print(f"{phase}: from {_rel(from_path)}; generating the data (function headers of the corpus) ...")
    data = finetune_data(args.seed)
    _fit(data, tok, int(base["config"].get("block_size", 0)))
    n_params = sum(p.numel() for p in {id(p): p for p in policy.parameters()}.values())
    metrics: dict[str, Any] = {
        "phase": phase, "from": str(from_path), "run": args.run, "steps_planned": steps, "batch_size": int(d["batch"]),
        "lr": lr, "beta": args.beta if phase == "dpo" else None, "lora": bool(args.lora),
        "trainable_fraction": fraction, "parameters": n_params, "data": data.summary(), "device": str(device),
        "history": list(own.get("metrics", {}).get("history", [])) if own else [],
    }  # fmt: skip
    rng = random.Random(args.seed)
    if own and own.get("data_rng") is not None:
        rng.setstate(own["data_rng"])
    state = PhaseState(args, st, folder, device, policy, reference, tok, data, optimizer, steps, int(d["batch"]), start,
                       base, from_path, metrics, rng)  # fmt: skip
    if own and "before" in own.get("metrics", {}):
        metrics["before"] = own["metrics"]["before"]
    else:
        t0 = time.perf_counter()
        metrics["before"] = evaluate(st, policy, reference, tok, data, device)
        console.print(_line("before", metrics["before"]) + f" ({time.perf_counter() - t0:.0f} s)")
    if args.lora:
        console.print(f"LoRA r={LORA_R}, alpha={LORA_ALPHA:g} on attention: {100 * fraction:.2f}% of the parameters train")
    return state


def _train(s: PhaseState, console: Any, stop: Any) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    phase, ft = s.args.phase, s.st.ft
    train = s.data.sft_train if phase == "sft" else s.data.pref_train
    progress = Progress(TextColumn(f"[bold]{phase} step"), MofNCompleteColumn(), BarColumn(bar_width=24),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        console=console, disable=not console.is_terminal)  # fmt: skip
    every = max(1, s.steps // 10)
    t0 = time.perf_counter()
    step = s.start_step
    with progress:
        task = progress.add_task(phase, total=s.steps, completed=step, info="")
        while step < s.steps and not stop():
            chunk = s.rng.sample(train, min(s.batch, len(train)))
            if phase == "sft":
                ids, labels = call_learner("stage 2.5 sft_batch", ft.sft_batch, s.tok, chunk)
                loss = call_learner("stage 2.5 sft_step", ft.sft_step, s.policy, s.optimizer, ids.to(s.device), labels.to(s.device))
                rec = {"step": step + 1, "loss": float(loss)}
            else:
                ids, labels = call_learner("stage 2.5 dpo_batch", ft.dpo_batch, s.tok, chunk)
                out = call_learner("stage 2.5 dpo_step", ft.dpo_step, s.policy, s.reference, s.optimizer, ids.to(s.device),
                                   labels.to(s.device), s.args.beta)  # fmt: skip
                rec = {"step": step + 1, **{k: float(v) for k, v in dict(out).items()}}
            step += 1
            s.metrics["history"].append(rec)
            info = "  ".join(f"{k} {v:.3f}" for k, v in rec.items() if k != "step")
            progress.update(task, completed=step, info=info)
            if not console.is_terminal and step % every == 0:
                console.print(f"{phase} step {step}/{s.steps}: {info}")
    s.metrics["train_seconds"] = s.metrics.get("train_seconds", 0.0) + time.perf_counter() - t0
    return step


def _finish(s: PhaseState, done: int, console: Any, stopped: bool) -> None:
    import torch

    m = s.metrics
    m["steps"] = done
    if not stopped:
        t0 = time.perf_counter()
        m["after"] = evaluate(s.st, s.policy, s.reference, s.tok, s.data, s.device)
        m["eval_seconds"] = time.perf_counter() - t0
    lora = bool(s.args.lora)
    if lora:
        merge_lora(s.policy)
    tok_json = s.base_ckpt["tokenizer"]
    ckpt = {
        "model": {k: v.detach().cpu() for k, v in s.policy.state_dict().items()},
        "optimizer": s.optimizer.state_dict() if not lora else {},
        "step": done,
        "config": dict(s.base_ckpt["config"]),
        "tokenizer": tok_json,
        "tokenizer_sha256": hashlib.sha256(tok_json.encode("utf-8")).hexdigest(),
        "train_config": {"phase": s.args.phase, "batch_size": s.batch, "lr": m["lr"], "beta": m["beta"], "lora": lora},
        "phase": s.args.phase,
        "from": str(s.from_path),
        "lora": lora,
        "data_rng": s.rng.getstate(),
        "metrics": {"before": m["before"], "history": m["history"]},
        "rng": {"torch": torch.get_rng_state()},
        "scaler": None,
    }
    _save_torch(s.folder / "checkpoint.pt", ckpt)
    write_json(s.folder / "finetune.json", m)
    if stopped:
        return
    console.print(_line("before", m["before"]))
    console.print(_line("after ", m["after"]))
    for smp in m["after"]["samples"][:2]:
        console.print(f"  {smp['prompt']!r} -> {smp['answer']!r}")
    nxt = "nox -s train -- --phase dpo" if s.args.phase == "sft" else 'nox -s generate -- --compare base,sft,dpo --temperature 0'
    run_opt = f" --run {s.args.run}" if s.args.run != "default" else ""
    console.print(f"done: {done} {s.args.phase} steps in {m['train_seconds']:.0f} s (evaluation {m['eval_seconds']:.0f} s);"
                  f" wrote {_rel(s.folder)}/checkpoint.pt and finetune.json. Next: {nxt}{run_opt}")  # fmt: skip


# ----------------------------------------------------------------------------- nox -s generate -- --compare


DEFAULT_PROMPT = "function read_config with arguments path, mode"


def compare_paths(spec: str, run: str) -> list[tuple[str, Path]]:
    """``base,sft,dpo`` (names of the run's phases) or checkpoint paths -> [(label, path)]; UsageError on a bad list."""
    names = [x.strip() for x in spec.split(",")]
    if not names or any(not x for x in names):
        raise UsageError(f"--compare takes a comma-separated list such as base,sft,dpo, got {spec!r}")
    folder = RUNS_DIR / run
    where = {"base": folder / "checkpoint.pt", "pretrain": folder / "checkpoint.pt", "sft": folder / "sft" / "checkpoint.pt",
             "dpo": folder / "dpo" / "checkpoint.pt"}  # fmt: skip
    out = []
    for name in names:
        if name in where:
            path = where[name]
        elif name.endswith(".pt") or "/" in name:
            path = Path(name)
        else:
            raise UsageError(f"--compare: {name!r} is not base, sft, dpo or a checkpoint path (*.pt)")
        if not path.is_file():
            how = {"base": "nox -s train", "pretrain": "nox -s train", "sft": "nox -s train -- --phase sft",
                   "dpo": "nox -s train -- --phase dpo"}.get(name, "")  # fmt: skip
            raise UsageError(f"--compare {name}: no checkpoint at {_rel(path)}" + (f"; make it with `{how}`" if how else ""))
        out.append((name, path))
    return out


def compare(args: argparse.Namespace) -> int:
    """``nox -s generate -- --compare base,sft,dpo [prompt]``: each model answers the same chat prompt."""
    from grader import generate as gen

    def err(line: str) -> None:
        print(f"generate: {line}", file=sys.stderr, flush=True)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    prompt = args.prompt or DEFAULT_PROMPT
    try:
        paths = compare_paths(args.compare, args.run)
        device = gen.pick_device(args.device)
        ckpts = [(name, path, gen.read_checkpoint(path, device)) for name, path in paths]
        stages = gen.load_stages(args.version, args.deps)
        opts = gen.Options(args.temperature, args.top_k, args.top_p, args.max_new_tokens, args.seed, not args.no_cache)
        write(f"prompt: {prompt!r} (the chat template adds <|endoftext|>; temperature {args.temperature:g}, seed {args.seed})\n")
        for name, path, ckpt in ckpts:
            model, tok = gen.build_model(ckpt, path, stages, device)
            write(f"--- {name} ({_rel(path)}):\n")
            gen.generate_text(stages, model, tok, prompt + gen.ENDOFTEXT, opts, _AfterPrompt(write))
            write("\n")
    except gen.UsageError as exc:
        err(str(exc))
        return 2
    except UsageError as exc:
        err(str(exc))
        return 2
    except gen.LearnerError as exc:
        write("\n")
        err(str(exc))
        return 1
    except KeyboardInterrupt:
        write("\n")
        err("interrupted")
        return 130
    return 0


class _AfterPrompt:
    """``generate_text`` writes the prompt first, then the new text: pass on only the new text."""

    def __init__(self, write: Any) -> None:
        self.write, self.first = write, True

    def __call__(self, text: str) -> None:
        if self.first:
            self.first = False
            return
        self.write(text)
