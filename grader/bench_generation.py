"""``nox -s bench -- 2.4``: generation with and without the KV cache (stage 2.4).

    nox -s bench -- 2.4 [--version skeleton|solution] [--deps solution|mine] [--device cpu|cuda|mps]
                        [--sizes 64,128,256,512] [--prompt-len 16] [--d-model 128] [--layers 4]
                        [--heads 4] [--vocab 1024] [--batch 1] [--repeats 3] [--threads N] [--json PATH]

For each number of new tokens it times greedy ``generate`` with ``use_cache=True`` and with
``use_cache=False`` on the same randomly initialised stage 2.2 GPT (the ``tiny`` training config's
shape by default, with block_size = prompt + the largest size, so no run is cropped), in
interleaved rounds (alternating which goes first, so a burst of load elsewhere hits both), and
prints the median tokens/s of each, the interquartile range, and the speed-up with the range of
the per-round speed-ups. Then the cost of each token against its position, from one timed
stream of each: flat with the cache (one token's work, plus attention over the cache), growing
without it (the whole prefix again, every step).

CPU threads are pinned as grading pins them (``OMP_NUM_THREADS``, else 1) unless ``--threads``.
A separate program from the grader: it imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from grader.bench import BenchError, _parse_sizes, _sync, grading_threads

BINS = 8  # positions per curve


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[no-untyped-def]
        raise BenchError(f"{message} (see `nox -s bench -- 2.4 --help`)")


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, med, q3


def _generate_seconds(gen: Any, model: Any, prompt: Any, n: int, use_cache: bool, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    out = gen.generate(model, prompt, n, temperature=0.0, use_cache=use_cache)
    _sync(device)
    seconds = time.perf_counter() - t0
    if tuple(out.shape) != (prompt.size(0), prompt.size(1) + n):
        raise BenchError(f"generate returned shape {tuple(out.shape)}, expected {(prompt.size(0), prompt.size(1) + n)}")
    return seconds


def per_token_ms(gen: Any, model: Any, prompt: Any, n: int, use_cache: bool, device: str) -> list[float]:
    """Milliseconds each new token took, in order (one stream)."""
    times: list[float] = []
    _sync(device)
    t0 = time.perf_counter()
    for _ in gen.generate_stream(model, prompt, n, temperature=0.0, use_cache=use_cache):
        _sync(device)
        t1 = time.perf_counter()
        times.append((t1 - t0) * 1e3)
        t0 = t1
    return times


def binned(times: list[float], bins: int = BINS) -> list[tuple[int, int, float]]:
    """(first step, last step, median ms) over ``bins`` equal runs of steps."""
    n = len(times)
    out = []
    for b in range(min(bins, n)):
        lo, hi = b * n // min(bins, n), (b + 1) * n // min(bins, n)
        out.append((lo, hi - 1, statistics.median(times[lo:hi])))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from shared.loader import load, load_dep

    gen = load("2.4")
    gpt = load_dep("2.2")
    sizes = args.sizes
    block = args.prompt_len + max(sizes)
    torch.manual_seed(0)
    cfg = gpt.GPTConfig(vocab_size=args.vocab, block_size=block, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads)
    model = gpt.GPT(cfg).to(args.device).eval()
    prompt = torch.randint(0, args.vocab, (args.batch, args.prompt_len), device=args.device)
    rows = []
    with torch.no_grad():
        for use_cache in (True, False):  # warm-up: first-call costs of every kernel
            gen.generate(model, prompt, min(8, min(sizes)), temperature=0.0, use_cache=use_cache)
        for n in sizes:
            cached: list[float] = []
            uncached: list[float] = []
            for r in range(args.repeats):
                order = [(True, cached), (False, uncached)]
                for use_cache, out in order if r % 2 == 0 else order[::-1]:
                    out.append(_generate_seconds(gen, model, prompt, n, use_cache, args.device))
            tokens = n * args.batch
            speedups = [u / c for c, u in zip(cached, uncached, strict=True)]
            rows.append({
                "new_tokens": n,
                "cached_s": cached, "uncached_s": uncached,
                "cached_tokens_per_s": tokens / statistics.median(cached),
                "uncached_tokens_per_s": tokens / statistics.median(uncached),
                "cached_iqr_s": [_quartiles(cached)[0], _quartiles(cached)[2]],
                "uncached_iqr_s": [_quartiles(uncached)[0], _quartiles(uncached)[2]],
                "speedup": statistics.median(uncached) / statistics.median(cached),
                "speedup_range": [min(speedups), max(speedups)],
            })  # fmt: skip
        n = max(sizes)
        curves = {
            "cached": per_token_ms(gen, model, prompt, n, True, args.device),
            "uncached": per_token_ms(gen, model, prompt, n, False, args.device),
        }
    return {"config": {"prompt_len": args.prompt_len, "block_size": block, "d_model": args.d_model, "n_layers": args.layers,
                       "n_heads": args.heads, "vocab_size": args.vocab, "batch": args.batch},
            "rows": rows, "per_token_ms": curves}  # fmt: skip


def render(result: dict[str, Any], header: str) -> None:
    from rich.table import Table

    from grader.report import make_console, table_box

    console = make_console()
    console.print(header)
    table = Table(title="greedy generate: tokens/s with and without the KV cache (median of the rounds, IQR)",
                  title_justify="left", box=table_box(console))  # fmt: skip
    for col in ("new tokens", "cached tok/s", "cached IQR s", "uncached tok/s", "uncached IQR s", "speed-up", "per-round"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in result["rows"]:
        table.add_row(
            str(r["new_tokens"]), f"{r['cached_tokens_per_s']:,.0f}", "{:.3f}-{:.3f}".format(*r["cached_iqr_s"]),
            f"{r['uncached_tokens_per_s']:,.0f}", "{:.3f}-{:.3f}".format(*r["uncached_iqr_s"]),
            f"{r['speedup']:.2f}x", "{:.2f}-{:.2f}".format(*r["speedup_range"]),
        )  # fmt: skip
    console.print(table)
    curves = result["per_token_ms"]
    c_bins, u_bins = binned(curves["cached"]), binned(curves["uncached"])
    top = max(ms for _, _, ms in u_bins + c_bins) or 1.0
    prompt_len = result["config"]["prompt_len"]
    curve = Table(title=f"ms per token against its position (one stream of {len(curves['cached'])} tokens, median per bin)",
                  title_justify="left", box=table_box(console))  # fmt: skip
    for col in ("positions", "cached ms", "", "uncached ms", ""):
        curve.add_column(col, justify="right" if col else "left", no_wrap=True)
    for (lo, hi, c), (_, _, u) in zip(c_bins, u_bins, strict=True):
        curve.add_row(f"{prompt_len + lo}-{prompt_len + hi}", f"{c:.2f}", "#" * max(1, round(20 * c / top)),
                      f"{u:.2f}", "#" * max(1, round(20 * u / top)))  # fmt: skip
    console.print(curve)
    console.print("speed-up = uncached time / cached time, measured in interleaved rounds of the same run. With the cache each"
                  " step feeds one token, so its cost stays nearly flat; without it every step reruns the whole prefix.")  # fmt: skip


def main(argv: list[str]) -> int:
    p = _Parser(prog="nox -s bench -- 2.4", description="Generation with and without the KV cache.")
    p.add_argument("--version", choices=("skeleton", "solution"), default="skeleton")
    p.add_argument("--deps", choices=("solution", "mine"), default="solution", help="the GPT (2.2): reference or yours")
    p.add_argument("--device", choices=("cpu", "cuda", "mps"), default=None, help="default: cuda > mps > cpu")
    p.add_argument("--sizes", default="64,128,256,512", help="numbers of new tokens (default 64,128,256,512)")
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds per size (default 3)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: as grading, OMP_NUM_THREADS or 1)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    try:
        args = p.parse_args(argv)
        args.sizes = _parse_sizes(args.sizes)
        for name in ("prompt_len", "d_model", "layers", "heads", "vocab", "batch"):
            if getattr(args, name) < 1:
                raise BenchError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
        if args.d_model % args.heads:
            raise BenchError(f"--d-model {args.d_model} is not divisible by --heads {args.heads}")
        if args.repeats < 2:
            raise BenchError(f"--repeats {args.repeats}: need at least 2 rounds to measure a spread")
        if args.threads is not None and args.threads < 1:
            raise BenchError(f"--threads {args.threads}: must be at least 1")
        os.environ["LLMFS_VERSION"] = args.version
        os.environ["LLMFS_DEPS"] = args.deps
        from shared import loader

        if getattr(loader, "_SETTINGS", None) is not None:  # the loader reads its settings once, at import
            loader._SETTINGS.update({"version": args.version, "deps": args.deps})
        import torch

        torch.set_num_threads(args.threads or grading_threads())
        if args.device is None:
            args.device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
        if args.device == "cuda" and not torch.cuda.is_available():
            raise BenchError("--device cuda: no CUDA device here (nox -s doctor says why)")
        if args.device == "mps" and not torch.backends.mps.is_available():
            raise BenchError("--device mps: no Apple MPS device here")
        try:
            result = run(args)
        except (BenchError, KeyboardInterrupt):
            raise
        except NotImplementedError as exc:
            raise BenchError(
                f"stage 2.4 ({args.version}) is not implemented yet ({exc}): implement it, or bench the reference with"
                " `nox -s bench -- 2.4 --version solution`"
            ) from None
        except loader.LearnerCodeError as exc:
            raise BenchError(str(exc)) from None
        except Exception as exc:  # the learner's code failed while running: one line
            raise BenchError(f"stage 2.4 ({args.version}) failed while running: {type(exc).__name__}: {exc}") from None
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        text = str(exc)
        return 2 if text.startswith("--") or "(see `nox -s bench" in text else 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    c = result["config"]
    header = (f"Stage 2.4 ({args.version}) on {args.device}: GPT d_model {c['d_model']}, {c['n_layers']} layers, {c['n_heads']} heads,"
              f" vocab {c['vocab_size']}, block_size {c['block_size']}, batch {c['batch']}, prompt {c['prompt_len']} tokens;"
              f" torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")  # fmt: skip
    render(result, header)
    if args.json:
        from grader.progress import write_atomic

        doc = {"stage": "2.4", "version": args.version, "device": args.device, "threads": torch.get_num_threads(),
               "repeats": args.repeats, **result}  # fmt: skip
        try:
            write_atomic(Path(args.json), json.dumps(doc, indent=2))
        except OSError as exc:
            print(f"bench: cannot write {args.json}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main(sys.argv[1:]))
