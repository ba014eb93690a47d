"""``nox -s generate``: your trained GPT writes text, token by token, with your stage 2.4 sampler.

    nox -s generate -- "prompt" [--checkpoint PATH | --run NAME] [--temperature T] [--top-k K]
                      [--top-p P] [--max-new-tokens N] [--seed S] [--no-cache] [--device ...]
                      [--version skeleton|solution] [--deps mine|solution]

Reads the checkpoint ``nox -s train`` writes (default ``.llmfs/runs/default/checkpoint.pt``; a
stage 2.3 checkpoint dict): rebuilds the GPT from its ``"config"`` and the tokenizer from its
``"tokenizer"`` text, so a checkpoint is all it needs. It prints the prompt, then streams each new
token as soon as it is sampled (bytes are decoded incrementally, so a character split over two
tokens appears whole), and stops at ``<|endoftext|>`` or after ``--max-new-tokens``. A summary
line (tokens, tokens/s, cache on or off) goes to stderr, so stdout is only the text.

``--version`` picks the stage 2.4 code (yours by default); ``--deps`` the GPT (2.2) and tokenizer
(2.1) code the checkpoint is loaded into (yours by default, as ``nox -s train`` uses). Bad input —
no checkpoint (it says how to train one), a damaged one, an out-of-range option — gets one line
and exit status 2; code that is not implemented or raises gets one line and exit status 1;
Ctrl-C stops the stream with exit status 130.

Several models, one prompt: ``generate_text`` runs one checkpoint and ``load_model`` loads one, so
stage 2.5's ``--compare base,sft,dpo`` (run names under ``.llmfs/runs/``) is a loop over them with
the same options and seed. A checkpoint is a pickle: load only checkpoints you made.
This is a separate program from the grader: it imports torch.
"""

from __future__ import annotations

import argparse
import codecs
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.commands import LearnerError, UsageError, call_learner
from shared.registry import ROOT

RUNS_DIR = ROOT / ".llmfs" / "runs"
ENDOFTEXT = "<|endoftext|>"


# ----------------------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[no-untyped-def]
        raise UsageError(f"{message} (nox -s generate -- --help lists the options)")


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} expects a whole number, got {text!r}") from None
    if value < 1:
        raise UsageError(f"{name} must be at least 1, got {value}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="nox -s generate --", description="Sample text from a checkpoint of nox -s train.")
    p.add_argument("prompt", nargs="?", default="", help='the text to continue (default: start after <|endoftext|>), e.g. "def "')
    p.add_argument("--checkpoint", default=None, help="a checkpoint file (default: .llmfs/runs/<run>/checkpoint.pt)")
    p.add_argument("--run", default="default", help="the run whose checkpoint to use (default 'default')")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; below 1 sharper, above 1 wilder (default 0.8)")
    p.add_argument("--top-k", default=None, help="keep the k most likely tokens (default: no top-k)")
    p.add_argument("--top-p", type=float, default=None, help="keep the smallest set with probability mass >= p (default: none)")
    p.add_argument("--max-new-tokens", default="200", help="at most this many new tokens (default 200)")
    p.add_argument("--seed", type=int, default=0, help="the sampling generator's seed: the same seed, the same text (default 0)")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context every step (no KV cache)")
    p.add_argument("--device", default="auto", help="auto (default: cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--version", choices=("skeleton", "solution"), default="skeleton",
                   help="skeleton: your stage 2.4 code (default); solution: the reference")  # fmt: skip
    p.add_argument("--deps", choices=("mine", "solution"), default="mine",
                   help="mine: your GPT (2.2) and tokenizer (2.1) too (default); solution: the reference ones")  # fmt: skip
    p.add_argument("--compare", default=None,
                   help="stage 2.5: base,sft,dpo (the run's phases) or checkpoint paths: each answers the same chat prompt")  # fmt: skip
    args = p.parse_args(argv)
    if not args.temperature >= 0 or args.temperature == float("inf"):
        raise UsageError(f"--temperature must be 0 (greedy) or positive, got {args.temperature}")
    args.top_k = None if args.top_k is None else _positive_int("--top-k", args.top_k)
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")
    args.max_new_tokens = _positive_int("--max-new-tokens", args.max_new_tokens)
    if not args.run or any(c in args.run for c in "/\\") or args.run in (".", ".."):
        raise UsageError(f"--run must be a plain name (no slashes), got {args.run!r}")
    if "\x00" in args.prompt:
        raise UsageError("the prompt contains a NUL character")
    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the prompt is not valid text (it holds bytes that are not UTF-8)") from None
    return args


# ----------------------------------------------------------------------------- loading the stages (learner errors: grader/commands.py)


@dataclass
class Stages:
    tokenizer: Any  # stage 2.1's module
    gpt: Any  # stage 2.2's module
    generation: Any  # stage 2.4's module


def load_stages(version: str, deps: str) -> Stages:
    """Stage 2.4 in ``version``; 2.1 and 2.2 as ``deps`` says (mine: the same version as 2.4)."""
    os.environ["LLMFS_VERSION"] = version
    os.environ["LLMFS_DEPS"] = deps
    from shared import loader

    if getattr(loader, "_SETTINGS", None) is not None:  # the loader reads its settings once, at import
        loader._SETTINGS.update({"version": version, "deps": deps})
    try:
        gen = loader.load("2.4")
        return Stages(loader.load_dep("2.1"), loader.load_dep("2.2"), gen)
    except loader.LearnerCodeError as exc:
        raise LearnerError(str(exc)) from None


# ----------------------------------------------------------------------------- the checkpoint


def pick_device(spec: str) -> Any:
    import torch

    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UsageError(f"--device {spec}: no such CUDA device here (nox -s doctor says why)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"--device {spec}: no Apple MPS device here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def checkpoint_path(checkpoint: str | None, run: str) -> Path:
    """The checkpoint to read; UsageError (with how to make one) when there is none."""
    path = Path(checkpoint) if checkpoint else RUNS_DIR / run / "checkpoint.pt"
    if not path.is_file():
        shown = path.relative_to(ROOT) if path.is_absolute() and path.is_relative_to(ROOT) else path
        if checkpoint:
            raise UsageError(f"no checkpoint file at {shown}")
        hint = "nox -s train" + (f" -- --run {run}" if run != "default" else "")
        raise UsageError(f"no checkpoint at {shown}: train a model first with `{hint}` (a few minutes on a CPU)")
    return path


def read_checkpoint(path: Path, device: Any) -> dict[str, Any]:
    """The checkpoint dict of ``nox -s train``, checked for what generation needs; UsageError if it is not one."""
    import torch

    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)  # your own file: it holds RNG states
    except Exception as exc:  # a damaged or foreign file: one line
        raise UsageError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}") from None
    if not isinstance(ckpt, dict):
        raise UsageError(f"{path} is not a training checkpoint (expected the dict nox -s train saves, got {type(ckpt).__name__})")
    missing = [k for k in ("model", "config", "tokenizer") if k not in ckpt]
    if missing:
        raise UsageError(f"{path} is not a training checkpoint: it has no {', '.join(repr(k) for k in missing)}")
    text = ckpt["tokenizer"]
    if not isinstance(text, str):
        raise UsageError(f"{path}: 'tokenizer' must be the tokenizer's JSON text, got {type(text).__name__}")
    digest = ckpt.get("tokenizer_sha256")
    if digest is not None and digest != hashlib.sha256(text.encode("utf-8")).hexdigest():
        raise UsageError(f"{path}: the tokenizer text does not match its tokenizer_sha256 (a damaged checkpoint)")
    if not isinstance(ckpt["config"], dict):
        raise UsageError(f"{path}: 'config' must be a dict of GPTConfig fields, got {type(ckpt['config']).__name__}")
    return ckpt


def load_model(path: Path, stages: Stages, device: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(GPT in eval mode on ``device``, BPETokenizer, the checkpoint dict) from a stage 2.3 checkpoint."""
    ckpt = read_checkpoint(path, device)
    return (*build_model(ckpt, path, stages, device), ckpt)


def build_model(ckpt: dict[str, Any], path: Path, stages: Stages, device: Any) -> tuple[Any, Any]:
    """(GPT in eval mode on ``device``, BPETokenizer) from a checkpoint dict, with your (or the reference) 2.2 and 2.1."""
    text = ckpt["tokenizer"]
    with tempfile.TemporaryDirectory() as tmp:
        tok_file = Path(tmp, "tokenizer.json")
        tok_file.write_text(text, encoding="utf-8")
        tokenizer = call_learner("BPETokenizer.load (stage 2.1)", stages.tokenizer.BPETokenizer.load, tok_file)
    config = ckpt["config"]
    try:
        cfg = stages.gpt.GPTConfig(**config)
    except TypeError as exc:
        raise UsageError(f"{path}: its config does not fit GPTConfig: {exc}") from None
    model = call_learner("GPT(config) (stage 2.2)", stages.gpt.GPT, cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path}: its weights do not fit the GPT built from its config: {first}") from None
    return model.to(device).eval(), tokenizer


# ----------------------------------------------------------------------------- streaming text


class TextStream:
    """Token ids -> text, incrementally: bytes that end mid-character wait for the next token."""

    def __init__(self, tokenizer: Any) -> None:
        self.vocab: dict[int, bytes] = dict(getattr(tokenizer, "vocab", {}) or {})
        self.special = {i: s for s, i in (getattr(tokenizer, "special_tokens", {}) or {}).items()}
        self.tokenizer = tokenizer
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def piece(self, token_id: int) -> str:
        if token_id in self.special:
            data = self.special[token_id].encode("utf-8")
        elif token_id in self.vocab:
            data = self.vocab[token_id]
        else:  # an id the tokenizer does not know (a model with a larger vocabulary than its tokenizer)
            return "\ufffd"
        return self.decoder.decode(data)

    def flush(self) -> str:
        return self.decoder.decode(b"", final=True)


@dataclass
class Options:
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int = 200
    seed: int = 0
    use_cache: bool = True


def generate_text(
    stages: Stages, model: Any, tokenizer: Any, prompt: str, opts: Options, write: Callable[[str], None]
) -> tuple[int, float, bool]:
    """Stream one continuation of ``prompt`` through ``write``; returns (new tokens, seconds, stopped at end-of-text)."""
    import torch

    device = next(model.parameters()).device
    eos_id = (getattr(tokenizer, "special_tokens", {}) or {}).get(ENDOFTEXT)
    ids = call_learner("BPETokenizer.encode (stage 2.1)", tokenizer.encode, prompt, allowed_special="all") if prompt else []
    if not ids:
        if eos_id is None:
            raise UsageError("give a prompt: this tokenizer has no <|endoftext|> token to start from")
        ids = [eos_id]  # a fresh document
    vocab_size = model.config.vocab_size
    if max(ids) >= vocab_size:
        raise UsageError(f"the prompt encodes to token id {max(ids)}, beyond the model's vocab_size {vocab_size}: tokenizer and model disagree")
    x = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T0)
    try:  # the generator lives where the probabilities are (torch.multinomial needs that)
        gen = torch.Generator(device=device).manual_seed(opts.seed)
    except RuntimeError:
        gen = torch.Generator().manual_seed(opts.seed)
    stream = TextStream(tokenizer)
    write(prompt)
    tokens = call_learner(
        "generate_stream (stage 2.4)", stages.generation.generate_stream, model, x, opts.max_new_tokens,
        temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p, eos_id=eos_id, generator=gen,
        use_cache=opts.use_cache,
    )  # fmt: skip
    n, ended = 0, False
    t0 = time.perf_counter()
    it = iter(tokens)
    while True:
        token = call_learner("generate_stream (stage 2.4)", next, it, None)
        if token is None:
            break
        n += 1
        try:
            token_id = int(token.reshape(-1)[0])
        except (AttributeError, TypeError, ValueError, RuntimeError, IndexError):
            raise LearnerError(f"generate_stream (stage 2.4) yielded {type(token).__name__} {str(token)[:60]!r}; expected a (B,) tensor of token ids") from None
        if eos_id is not None and token_id == eos_id:
            ended = True
            break
        write(stream.piece(token_id))
        if n >= opts.max_new_tokens:
            break
    write(stream.flush())
    return n, time.perf_counter() - t0, ended


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    def err(line: str) -> None:
        print(f"generate: {line}", file=sys.stderr, flush=True)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        args = parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.compare is not None:  # stage 2.5: several finetuned models, one prompt (grader/finetune.py)
            from grader.finetune import compare

            return compare(args)
        path = checkpoint_path(args.checkpoint, args.run)
        device = pick_device(args.device)
        ckpt = read_checkpoint(path, device)
        stages = load_stages(args.version, args.deps)
        model, tokenizer = build_model(ckpt, path, stages, device)
        opts = Options(args.temperature, args.top_k, args.top_p, args.max_new_tokens, args.seed, not args.no_cache)
        n, seconds, ended = generate_text(stages, model, tokenizer, args.prompt, opts, write)
    except UsageError as exc:
        err(str(exc))
        return 2
    except LearnerError as exc:
        write("\n")
        err(str(exc))
        return 1
    except KeyboardInterrupt:
        write("\n")
        err("interrupted")
        return 130
    except BrokenPipeError:  # `| head`: the reader has gone; nothing more to say
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter's final flush quiet
        except OSError:
            pass
        return 0
    write("\n")
    rate = n / seconds if seconds > 0 else float("inf")
    why = "end of text" if ended else f"max {args.max_new_tokens} new tokens" if n >= args.max_new_tokens else "stopped"
    err(f"{n} tokens in {seconds:.2f} s ({rate:,.0f} tokens/s), KV cache {'off' if args.no_cache else 'on'},"
        f" temperature {args.temperature:g}, seed {args.seed}; {why}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
