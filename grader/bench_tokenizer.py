"""``nox -s bench -- 2.1 [--version skeleton|solution] [--mb 1.0] [--vocab 1024] [--naive-kb 48] ...``

Stage 2.1's benchmark: how fast your ``BPETokenizer.train`` is, and how well it compresses.
It is a program of its own (a tokenizer has no tensors to time), reached through ``grader.bench``.

1. **Against the naive algorithm, in the same run.** Both train on the same ``--naive-kb`` of text at
   ``--naive-vocab``: yours, and the textbook algorithm written out here — every chunk of the text
   kept (no counting of distinct chunks), every pair recounted before every merge. Rounds interleave
   the two (alternating which goes first) so that load elsewhere hits both; reported: each side's
   median and interquartile range, and the speed-up (the naive time / yours) with the range of the
   per-round speed-ups. It also checks that both learned the same merges (the lesson's tie rule).
   The course's target for the reference: at least 20x.
2. **1 MB at vocab 1024.** Your ``train`` on ``--mb`` MB of text at ``--vocab`` (the course's target for
   the reference: about 10 s on one core), then bytes per token on held-out text and encode speed.
3. If the ``tokenizers`` package (Hugging Face) happens to be installed, its byte-level BPE trained on
   the same text at the same vocabulary size, for comparison of bytes per token (ours should be
   within 5%). It is never required, and never installed by the course.

The text: Python standard-library source from the running interpreter (``shared.corpus``, the default
corpus of ``nox -s train``): training files for training, validation files for the held-out text.
Everything runs in one process on one core (tokenizers are pure Python here).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ENDOFTEXT = "<|endoftext|>"
Pair = tuple[int, int]


class BenchError(Exception):
    """One line for the user; exit 2 for usage, 1 otherwise."""


class _Usage(BenchError):
    pass


# ----------------------------------------------------------------------------- the naive algorithm


def _merge(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    out: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def naive_train(text: str, vocab_size: int, special_tokens: Sequence[str] = (ENDOFTEXT,)) -> list[Pair]:
    """The textbook BPE: every chunk kept, every pair recounted before every merge; ties to the smallest pair."""
    import regex

    split = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    specials = sorted(set(special_tokens), key=len, reverse=True)
    pieces = regex.split("(" + "|".join(regex.escape(s) for s in specials) + ")", text) if specials else [text]
    words = [list(chunk.encode("utf-8")) for piece in pieces if piece not in specials for chunk in split.findall(piece)]
    merges: list[Pair] = []
    for k in range(vocab_size - 256 - len(set(special_tokens))):
        counts: dict[Pair, int] = {}
        for w in words:
            for pair in zip(w, w[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        words = [_merge(w, best, 256 + k) for w in words]
    return merges


# ----------------------------------------------------------------------------- timing


def _quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _learned(tok: Any) -> list[Pair]:
    return [(int(a), int(b)) for (a, b) in tok.merges]


def bytes_per_token(tok: Any, text: str) -> float:
    return len(text.encode("utf-8")) / max(1, len(tok.encode(text)))


def _tokenizers_bpt(train_text: str, held: str, vocab: int) -> str:
    """Hugging Face ``tokenizers`` (byte-level BPE, GPT-2 pre-split) bytes per token, if installed."""
    if importlib.util.find_spec("tokenizers") is None:
        return "not installed (optional, never required)"
    try:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # type: ignore[import-not-found]

        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[ENDOFTEXT], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
        tk.train_from_iterator(train_text.split(ENDOFTEXT), trainer)
        n = len(tk.encode(held).ids)
    except Exception as exc:  # another version's API: say so in one line, the rest of the report stands
        return f"could not be measured ({type(exc).__name__}: {exc})"
    return f"{len(held.encode('utf-8')) / max(1, n):.3f}"


def _texts(mb: float, naive_kb: float, held_kb: float) -> tuple[str, str, str]:
    from shared.corpus import CorpusError, load_corpus, split_documents

    try:
        corpus = load_corpus("python", max_bytes=int(mb * 1_000_000 * 1.4) + 400_000)
    except CorpusError as exc:
        raise BenchError(str(exc)) from None
    train_docs, val_docs = split_documents(corpus)
    train = ENDOFTEXT.join(train_docs)
    big = train.encode("utf-8")[: int(mb * 1_000_000)].decode("utf-8", errors="ignore")
    small = big.encode("utf-8")[: int(naive_kb * 1000)].decode("utf-8", errors="ignore")
    held = ENDOFTEXT.join(val_docs).encode("utf-8")[: int(held_kb * 1000)].decode("utf-8", errors="ignore")
    return big, small, held


def run(impl: ModuleType, *, mb: float, vocab: int, naive_kb: float, naive_vocab: int, repeats: int,
        held_kb: float, big_repeats: int) -> dict[str, Any]:  # fmt: skip
    cls = impl.BPETokenizer
    big, small, held = _texts(mb, naive_kb, held_kb)

    # 1. yours vs the naive algorithm, interleaved rounds, same text.
    yours, naive, ratios = [], [], []
    same = True
    for r in range(repeats):
        order = ("yours", "naive") if r % 2 == 0 else ("naive", "yours")
        t: dict[str, float] = {}
        for side in order:
            if side == "yours":
                t[side], tok = _timed(lambda: cls.train(small, naive_vocab))
                mine = _learned(tok)
            else:
                t[side], ref = _timed(lambda: naive_train(small, naive_vocab))
        same = same and mine == ref
        yours.append(t["yours"])
        naive.append(t["naive"])
        ratios.append(t["naive"] / t["yours"])

    # 2. the big run.
    big_times = []
    for _ in range(big_repeats):
        secs, tok = _timed(lambda: cls.train(big, vocab))
        big_times.append(secs)
    enc_s, ids = _timed(lambda: tok.encode(held))
    bpt = len(held.encode("utf-8")) / max(1, len(ids))
    round_trip = tok.decode(ids) == held
    return {
        "naive": {"kb": len(small.encode()) / 1000, "vocab": naive_vocab, "repeats": repeats,
                  "yours_s": _quartiles(yours), "naive_s": _quartiles(naive),
                  "speedup": statistics.median(ratios), "speedup_range": (min(ratios), max(ratios)), "same_merges": same},
        "big": {"mb": len(big.encode()) / 1e6, "vocab": vocab, "repeats": big_repeats, "train_s": _quartiles(big_times),
                "merges": len(tok.merges), "held_kb": len(held.encode()) / 1000, "bytes_per_token": bpt,
                "encode_mb_per_s": len(held.encode()) / 1e6 / max(enc_s, 1e-9), "round_trip": round_trip},
        "tokenizers": _tokenizers_bpt(big, held, vocab),
    }  # fmt: skip


def render(res: dict[str, Any], version: str) -> str:
    n, b = res["naive"], res["big"]
    q = lambda t: f"{t[1]:.2f} s (IQR {t[0]:.2f}-{t[2]:.2f})"  # noqa: E731
    lines = [
        f"Stage 2.1 ({version}): BPETokenizer.train, one process, Python {sys.version.split()[0]}",
        "",
        f"1. vs the naive algorithm (every chunk kept, all pairs recounted per merge), same run, {n['repeats']} interleaved rounds",
        f"   text {n['kb']:.0f} kB of stdlib source, vocab {n['vocab']}",
        f"   yours  {q(n['yours_s'])}",
        f"   naive  {q(n['naive_s'])}",
        f"   speed-up {n['speedup']:.1f}x (rounds {n['speedup_range'][0]:.1f}x-{n['speedup_range'][1]:.1f}x; target >= 20x)"
        + ("" if n["speedup_range"][1] <= 1.25 * n["speedup_range"][0] else "  [rounds disagree by > 25%: the machine is busy]"),
        f"   same merges as the naive algorithm: {'yes' if n['same_merges'] else 'NO (a different tie rule, or a bug)'}",
        "",
        f"2. {b['mb']:.2f} MB at vocab {b['vocab']} ({b['merges']} merges): {q(b['train_s'])} over {b['repeats']} run(s) (target: about 10 s)",
        f"   held-out {b['held_kb']:.0f} kB: {b['bytes_per_token']:.3f} bytes per token; encode {b['encode_mb_per_s']:.2f} MB/s;"
        f" decode(encode(text)) == text: {'yes' if b['round_trip'] else 'NO'}",
        "",
        f"3. Hugging Face tokenizers at vocab {b['vocab']}, same text: bytes per token {res['tokenizers']}",
    ]  # fmt: skip
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[no-untyped-def]
        raise _Usage(f"{message} (see `nox -s bench -- 2.1 --help`)")


def main(argv: list[str] | None = None) -> int:
    """``argv`` after the stage id: ``--version``, sizes, ``--json PATH``."""
    p = _Parser(prog="nox -s bench -- 2.1", description="Time your BPE training against the naive algorithm.")
    p.add_argument("--version", choices=("skeleton", "solution"), default="skeleton")
    p.add_argument("--mb", type=float, default=1.0, help="MB of text for the big run (default 1.0)")
    p.add_argument("--vocab", type=int, default=1024, help="vocab size for the big run (default 1024)")
    p.add_argument("--naive-kb", type=float, default=48.0, help="kB of text for the naive comparison (default 48)")
    p.add_argument("--naive-vocab", type=int, default=384, help="vocab size for the naive comparison (default 384)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds against the naive algorithm (default 3)")
    p.add_argument("--big-repeats", type=int, default=1, help="runs of the big training (default 1)")
    p.add_argument("--held-kb", type=float, default=200.0, help="kB of held-out text (default 200)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    try:
        args = p.parse_args(argv)
        for name in ("mb", "naive_kb", "held_kb"):
            if not getattr(args, name) > 0:
                raise _Usage(f"--{name.replace('_', '-')} {getattr(args, name)}: must be positive")
        for name in ("vocab", "naive_vocab"):
            if getattr(args, name) < 257:
                raise _Usage(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 257 (256 bytes + <|endoftext|>)")
        if args.repeats < 2:
            raise _Usage(f"--repeats {args.repeats}: need at least 2 rounds to measure a spread")
        if args.big_repeats < 1:
            raise _Usage(f"--big-repeats {args.big_repeats}: must be at least 1")
        os.environ["LLMFS_VERSION"] = args.version
        from shared.loader import LearnerCodeError, load

        try:
            impl = load("2.1")
            res = run(impl, mb=args.mb, vocab=args.vocab, naive_kb=args.naive_kb, naive_vocab=args.naive_vocab,
                      repeats=args.repeats, held_kb=args.held_kb, big_repeats=args.big_repeats)  # fmt: skip
        except NotImplementedError as exc:
            raise BenchError(
                f"stage 2.1 ({args.version}) is not implemented yet ({exc}): implement it, or bench the"
                " reference with `nox -s bench -- 2.1 --version solution`"
            ) from None
        except LearnerCodeError as exc:
            raise BenchError(str(exc)) from None
        except BenchError:
            raise
        except Exception as exc:  # the learner's code failed while running: one line, no traceback
            raise BenchError(f"stage 2.1 ({args.version}) failed while running: {type(exc).__name__}: {exc}") from None
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, _Usage) else 1
    print(render(res, args.version))
    if args.json:
        from grader.progress import write_atomic

        try:
            write_atomic(Path(args.json), json.dumps({"stage": "2.1", "version": args.version, **res}, indent=2))
        except OSError as exc:
            print(f"bench: cannot write {args.json}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
