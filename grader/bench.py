"""``nox -s bench -- <stage> [--version skeleton|solution] [--device cpu|cuda|mps] ...``

Times a stage's implementation against the torch reference over a sweep of sequence
lengths, forward and forward+backward, and prints a rich table: the median time of
each with its spread, the ratio to the reference measured in the same run (``1.07x`` =
7% slower) with the range of the per-round ratios, the peak memory of one
forward+backward (attention's grows as O(T^2)), and on a GPU the achieved TFLOP/s and
MFU (model FLOPs utilisation) against the device's peak.

Timing: after a warm-up of both, ``--repeats`` rounds **interleave** the implementation
and the reference (alternating which goes first), each round timing a block of calls
sized to ``--min-time``: so a burst of load elsewhere hits both sides, and each round
gives one paired ratio. Reported: the median of the rounds, the interquartile range
(IQR) of each side, and the min-max of the per-round ratios; a ratio whose rounds
disagree by more than 25%, or a side whose IQR exceeds 25% of its median, is flagged
as unreliable. Clock: ``time.perf_counter`` on the CPU, CUDA events on CUDA,
synchronised wall clock on MPS. CPU threads are pinned as grading pins them
(``OMP_NUM_THREADS``, else 1), or to ``--threads``; the header prints the count.
Memory: ``torch.cuda.max_memory_allocated`` on CUDA; elsewhere, the peak of the bytes of
tensor storage alive during the pass, tracked by a ``TorchDispatchMode``.

Adding a stage: write a function ``(impl, d_model, n_heads) -> list[Case]`` and decorate
it with ``@register("<id>")``; ``Case.make_input`` builds a different input than the
default float ``(B, T, d_model)`` tensor (token ids for a language model, say).

This is a separate program from the grader: it imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

#: A ratio is flagged unreliable when its per-round ratios spread more than this around it
#: (max/min - 1), or when either side's IQR is more than this fraction of its median.
UNRELIABLE_SPREAD = 0.25


class BenchError(Exception):
    """One line for the user; exit 1 (or 2 for usage)."""


@dataclass
class Case:
    name: str  # the row label: "MultiHeadAttention", "MultiHeadAttention (use_sdpa)"
    reference_name: str  # what it is timed against
    build: Callable[[], tuple[Any, Any]]  # -> (learner module, reference module), same shapes
    call: Callable[[Any, Any], Any]  # (module, x) -> output tensor
    ref_call: Callable[[Any, Any], Any]
    # (batch, T, d_model, device, dtype) -> the input x; None: a float (B, T, d_model) tensor with requires_grad
    make_input: Callable[[int, int, int, str, Any], Any] | None = None
    per_token: bool = False  # True: the input holds batch x T tokens, and the table adds fwd+bwd tokens/s


@dataclass
class Timing:
    """The rounds of one interleaved measurement, in milliseconds per call."""

    impl: list[float]
    ref: list[float]

    @staticmethod
    def _quartiles(xs: list[float]) -> tuple[float, float, float]:
        if len(xs) == 1:
            return xs[0], xs[0], xs[0]
        q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        return q1, med, q3

    @property
    def impl_ms(self) -> float:
        return statistics.median(self.impl)

    @property
    def ref_ms(self) -> float:
        return statistics.median(self.ref)

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.impl, self.ref, strict=True)]

    def iqr(self, side: str) -> tuple[float, float]:
        q1, _, q3 = self._quartiles(self.impl if side == "impl" else self.ref)
        return q1, q3

    @property
    def unreliable(self) -> bool:
        ratios = self.ratios
        if max(ratios) / min(ratios) - 1 > UNRELIABLE_SPREAD:
            return True
        return any((q3 - q1) / med > UNRELIABLE_SPREAD for q1, med, q3 in (self._quartiles(self.impl), self._quartiles(self.ref)))


@dataclass
class Row:
    case: str
    T: int
    fwd_ms: float
    ref_fwd_ms: float
    fb_ms: float
    ref_fb_ms: float
    mem_mb: float | None
    ref_mem_mb: float | None
    flops_fb: float
    extra: dict[str, Any] = field(default_factory=dict)
    fwd: Timing | None = None  # the rounds behind fwd_ms / ref_fwd_ms
    fb: Timing | None = None

    @property
    def ratio_fwd(self) -> float:
        return self.fwd_ms / self.ref_fwd_ms

    @property
    def ratio_fb(self) -> float:
        return self.fb_ms / self.ref_fb_ms

    @property
    def unreliable(self) -> bool:
        return any(t is not None and t.unreliable for t in (self.fwd, self.fb))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k not in ("fwd", "fb")}
        out.update(ratio_fwd=self.ratio_fwd, ratio_fb=self.ratio_fb, unreliable=self.unreliable)
        for name, t in (("fwd", self.fwd), ("fb", self.fb)):
            if t is not None:
                out[f"{name}_rounds"] = {"impl_ms": t.impl, "ref_ms": t.ref}
                out[f"{name}_iqr_ms"] = {"impl": list(t.iqr("impl")), "ref": list(t.iqr("ref"))}
                out[f"{name}_ratio_range"] = [min(t.ratios), max(t.ratios)]
        return out


# ----------------------------------------------------------------------------- the cases per stage


#: stage id -> a function (the stage's loaded module, d_model, n_heads) -> its cases. Add to it with @register.
BENCHES: dict[str, Callable[[ModuleType, int, int], list[Case]]] = {}


def register(stage: str) -> Callable[[Callable[[ModuleType, int, int], list[Case]]], Callable[[ModuleType, int, int], list[Case]]]:
    """``@register("1.4")`` over ``def f(impl, d_model, n_heads) -> list[Case]`` adds stage 1.4's benchmark."""

    def add(fn: Callable[[ModuleType, int, int], list[Case]]) -> Callable[[ModuleType, int, int], list[Case]]:
        BENCHES[stage] = fn
        return fn

    return add


def cases(stage: str, d_model: int, n_heads: int) -> list[Case]:
    """The cases of ``stage``, built on the version selected by ``LLMFS_VERSION``."""
    from shared.loader import load

    if stage not in BENCHES:
        raise BenchError(f"no benchmark for stage {stage}")
    return BENCHES[stage](load(stage), d_model, n_heads)


@register("1.3")
def _bench_1_3(impl: ModuleType, d_model: int, n_heads: int) -> list[Case]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    d_head = d_model // n_heads

    class RefHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = (nn.Linear(d_model, d_head, bias=False) for _ in range(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x), is_causal=True)

    return [
        Case(f"AttentionHead (d_head={d_head}, causal)", "Linear q/k/v + F.scaled_dot_product_attention",
             lambda: (impl.AttentionHead(d_model, d_head), RefHead()),
             lambda m, x: m(x, causal=True), lambda m, x: m(x))
    ]  # fmt: skip


@register("1.4")
def _bench_1_4(impl: ModuleType, d_model: int, n_heads: int) -> list[Case]:
    from torch import nn

    def ref() -> nn.Module:
        return nn.MultiheadAttention(d_model, n_heads, batch_first=True)

    # Like for like: the explicit path materialises the (B, h, T, T) weights, as torch does when it
    # returns them (need_weights=True, its default); the SDPA path against torch's fused path.
    out = [
        Case("MultiHeadAttention (explicit)", "nn.MultiheadAttention(batch_first=True), need_weights=True (its default)",
             lambda: (impl.MultiHeadAttention(d_model, n_heads), ref()),
             lambda m, x: m(x)[0], lambda m, x: m(x, x, x)[0])
    ]  # fmt: skip
    try:
        impl.MultiHeadAttention(d_model, n_heads, use_sdpa=True)
    except NotImplementedError:
        raise
    except TypeError:
        return out
    out.append(
        Case("MultiHeadAttention (use_sdpa)", "nn.MultiheadAttention(batch_first=True), need_weights=False (fused SDPA)",
             lambda: (impl.MultiHeadAttention(d_model, n_heads, use_sdpa=True), ref()),
             lambda m, x: m(x)[0], lambda m, x: m(x, x, x, need_weights=False)[0])
    )  # fmt: skip
    return out


@register("1.5a")
def _bench_1_5a(impl: ModuleType, d_model: int, n_heads: int) -> list[Case]:
    from torch import nn

    def ref_ff() -> nn.Module:
        return nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Dropout(0.0), nn.Linear(4 * d_model, d_model))

    return [Case("FeedForward (d_ff = 4 d_model)", "nn.Linear -> nn.GELU -> nn.Linear",
                 lambda: (impl.FeedForward(d_model), ref_ff()), lambda m, x: m(x), lambda m, x: m(x))]  # fmt: skip


@register("1.5b")
def _bench_1_5b(impl: ModuleType, d_model: int, n_heads: int) -> list[Case]:
    from torch import nn

    return [Case("LayerNorm", "nn.LayerNorm", lambda: (impl.LayerNorm(d_model), nn.LayerNorm(d_model)),
                 lambda m, x: m(x), lambda m, x: m(x))]  # fmt: skip


@register("1.6")
def _bench_1_6(impl: ModuleType, d_model: int, n_heads: int) -> list[Case]:
    from torch import nn

    def ref_block(norm_first: bool) -> nn.Module:
        return nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, activation="gelu",
                                          batch_first=True, norm_first=norm_first)  # fmt: skip

    return [
        Case(f"EncoderBlock ({'pre' if nf else 'post'}-LN)", "nn.TransformerEncoderLayer(gelu, batch_first)",
             (lambda nf=nf: (impl.EncoderBlock(d_model, n_heads, 4 * d_model, dropout=0.0, norm_first=nf), ref_block(nf))),
             lambda m, x: m(x), lambda m, x: m(x))
        for nf in (False, True)
    ]  # fmt: skip


@register("2.2")
def _bench_2_2(impl: ModuleType, d_model: int, n_heads: int) -> list[Case]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    vocab, block, n_layers = 1024, 4096, 4  # the course's tokenizer size; room for every --sizes value

    class RefGPT(nn.Module):
        """The same architecture from torch's modules: Embedding x2 -> TransformerEncoderLayer(norm_first) x N
        with a causal mask -> LayerNorm -> a head tied to the token table."""

        def __init__(self) -> None:
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, d_model), nn.Embedding(block, d_model)
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True,
                                           activation=lambda h: F.gelu(h, approximate="tanh"))
                for _ in range(n_layers)
            )  # fmt: skip
            self.ln_f = nn.LayerNorm(d_model)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            T = ids.size(1)
            x = self.wte(ids) + self.wpe.weight[:T]  # (B, T, d)
            mask = nn.Transformer.generate_square_subsequent_mask(T, device=ids.device, dtype=x.dtype)  # (T, T)
            for layer in self.layers:
                x = layer(x, src_mask=mask, is_causal=True)  # (B, T, d)
            return F.linear(self.ln_f(x), self.wte.weight)  # (B, T, V)

    def ids(batch: int, T: int, d: int, device: str, dtype: Any) -> torch.Tensor:
        return torch.randint(0, vocab, (batch, T), device=device)  # (B, T)

    def build(sdpa: bool) -> tuple[Any, Any]:
        cfg = impl.GPTConfig(vocab_size=vocab, block_size=block, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                             dropout=0.0, use_sdpa=sdpa)  # fmt: skip
        return impl.GPT(cfg), RefGPT()

    ref_name = f"torch.nn (Embedding, {n_layers} x TransformerEncoderLayer(norm_first, causal), LayerNorm, tied head)"
    return [
        Case(f"GPT ({n_layers} layers, vocab {vocab}{', use_sdpa' if sdpa else ''})", ref_name,
             (lambda sdpa=sdpa: build(sdpa)), lambda m, x: m(x)[0], lambda m, x: m(x), make_input=ids, per_token=True)
        for sdpa in (False, True)
    ]  # fmt: skip


def __getattr__(name: str) -> Any:
    """``STAGES``: the stages with a benchmark, in registration order (read live, so later entries count)."""
    if name == "STAGES":
        return tuple(BENCHES)
    raise AttributeError(name)


# ----------------------------------------------------------------------------- measuring


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def _block_ms(fn: Callable[[], Any], n: int, device: str) -> float:
    """Milliseconds per call of ``fn`` over a block of ``n`` calls, synchronised at both ends."""
    import torch

    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / n
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) * 1e3 / n


def time_pair(impl: Callable[[], Any], ref: Callable[[], Any], device: str, min_run_time: float, repeats: int) -> Timing:
    """Interleaved rounds of ``impl`` and ``ref`` (alternating which runs first), each a block of calls that
    takes about ``min_run_time / repeats`` seconds, after a warm-up of both."""
    for fn in (impl, ref, impl, ref):  # warm-up: lazy init, allocator, kernels' first-call costs
        fn()
    _sync(device)
    per_round = max(min_run_time, 1e-3) / max(repeats, 1)
    sizes = []
    for fn in (impl, ref):  # calls per block, from one timed call each
        one = _block_ms(fn, 1, device) / 1e3
        sizes.append(max(1, min(10_000, int(per_round / max(one, 1e-7)))))
    timing = Timing([], [])
    for r in range(repeats):
        order = ((impl, sizes[0], timing.impl), (ref, sizes[1], timing.ref))
        for fn, n, out in order if r % 2 == 0 else order[::-1]:
            out.append(_block_ms(fn, n, device))
    return timing


def peak_memory_mb(fn: Callable[[], Any], device: str) -> float | None:
    """Peak megabytes allocated by one call of ``fn`` (beyond what existed before it)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class _Peak(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, tuple[Any, int]] = {}
            self.current = self.peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
                self.current -= self.live.pop(key)[1]
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    st = t.untyped_storage()
                    key = st.data_ptr()
                    if key and key not in self.live:
                        self.live[key] = (StorageWeakRef(st), st.nbytes())
                        self.current += st.nbytes()
            self.peak = max(self.peak, self.current)
            return out

    tracker = _Peak()
    with tracker:
        fn()
    return tracker.peak / 2**20


def count_flops(fn: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


#: Dense peak TFLOP/s by (GPU name fragment, dtype) from the vendors' data sheets, for MFU.
PEAK_TFLOPS: dict[tuple[str, str], float] = {
    ("H200", "bfloat16"): 989.0, ("H200", "float16"): 989.0, ("H200", "float32"): 67.0,
    ("H100", "bfloat16"): 989.0, ("H100", "float16"): 989.0, ("H100", "float32"): 67.0,
    ("A100", "bfloat16"): 312.0, ("A100", "float16"): 312.0, ("A100", "float32"): 19.5,
    ("L4", "bfloat16"): 121.0, ("L4", "float16"): 121.0, ("L4", "float32"): 30.3,
    ("A10", "bfloat16"): 125.0, ("A10", "float16"): 125.0, ("A10", "float32"): 31.2,
    ("4090", "bfloat16"): 165.2, ("4090", "float16"): 165.2, ("4090", "float32"): 82.6,
    ("T4", "float16"): 65.0, ("T4", "float32"): 8.1,
    ("V100", "float16"): 125.0, ("V100", "float32"): 15.7,
}  # fmt: skip


def device_peak_tflops(device: str, dtype: str) -> float | None:
    import torch

    if device != "cuda":
        return None
    name = torch.cuda.get_device_name(0)
    for (fragment, dt), peak in PEAK_TFLOPS.items():
        if fragment in name and dt == dtype:
            return peak
    return None


def run(stage: str, device: str, dtype: str, sizes: list[int], batch: int, d_model: int, n_heads: int,
        min_run_time: float, repeats: int = 7) -> list[Row]:  # fmt: skip
    import torch

    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    rows: list[Row] = []
    for case in cases(stage, d_model, n_heads):
        learner, reference = case.build()
        learner = learner.to(device=device, dtype=dt).train()
        reference = reference.to(device=device, dtype=dt).train()
        for T in sizes:
            if case.make_input is not None:
                x = case.make_input(batch, T, d_model, device, dt)
            else:
                x = torch.randn(batch, T, d_model, device=device, dtype=dt, requires_grad=True)

            def fwd(m: Any, call: Callable[[Any, Any], Any], x: torch.Tensor = x) -> Callable[[], Any]:
                def f() -> Any:
                    with torch.no_grad():
                        return call(m, x)

                return f

            def fb(m: Any, call: Callable[[Any, Any], Any], x: torch.Tensor = x) -> Callable[[], Any]:
                def f() -> None:
                    call(m, x).float().sum().backward()
                    m.zero_grad(set_to_none=True)
                    if isinstance(x, torch.Tensor) and x.requires_grad:
                        x.grad = None

                return f

            t_fwd = time_pair(fwd(learner, case.call), fwd(reference, case.ref_call), device, min_run_time, repeats)
            t_fb = time_pair(fb(learner, case.call), fb(reference, case.ref_call), device, min_run_time, repeats)
            rows.append(
                Row(
                    case=case.name, T=T,
                    fwd_ms=t_fwd.impl_ms, ref_fwd_ms=t_fwd.ref_ms, fb_ms=t_fb.impl_ms, ref_fb_ms=t_fb.ref_ms,
                    fwd=t_fwd, fb=t_fb,
                    mem_mb=peak_memory_mb(fb(learner, case.call), device),
                    ref_mem_mb=peak_memory_mb(fb(reference, case.ref_call), device),
                    flops_fb=count_flops(fb(learner, case.call)),
                    extra={"reference": case.reference_name, "tokens": batch * T if case.per_token else None},
                )
            )  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- reporting


def render(rows: list[Row], stage: str, device: str, dtype: str, header: str) -> None:
    from rich.table import Table

    from grader.report import make_console, table_box

    console = make_console()
    console.print(header)
    peak = device_peak_tflops(device, dtype)
    by_case: dict[str, list[Row]] = {}
    for r in rows:
        by_case.setdefault(r.case, []).append(r)
    for case, case_rows in by_case.items():
        table = Table(title=f"{case} vs {case_rows[0].extra['reference']}", title_justify="left", box=table_box(console))
        per_token = bool(case_rows[0].extra.get("tokens"))
        for col in ("T", "pass", "yours ms", "ref ms", "ratio (range)", "peak MB") + (("tok/s yours/ref",) if per_token else ()):
            table.add_column(col, justify="right", no_wrap=True)
        if device == "cuda":
            table.add_column("TFLOP/s", justify="right")
            table.add_column("MFU", justify="right")
        for r in case_rows:
            assert r.fwd is not None and r.fb is not None
            mem = "-" if r.mem_mb is None else f"{r.mem_mb:.1f}"
            ref_mem = "-" if r.ref_mem_mb is None else f"{r.ref_mem_mb:.1f}"
            for name, t in (("fwd", r.fwd), ("fwd+bwd", r.fb)):
                cells = [str(r.T) if name == "fwd" else "", name, _ms(t, "impl"), _ms(t, "ref"), _ratio(t),
                         f"{mem}/{ref_mem}" if name == "fwd+bwd" else ""]  # fmt: skip
                if per_token:
                    n_tok = r.extra["tokens"]
                    cells.append(f"{n_tok / t.impl_ms * 1e3:,.0f}/{n_tok / t.ref_ms * 1e3:,.0f}")
                if device == "cuda":
                    if name == "fwd+bwd":
                        tflops = r.flops_fb / (r.fb_ms / 1e3) / 1e12
                        cells += [f"{tflops:.1f}", f"{100 * tflops / peak:.1f}%" if peak else "- (peak unknown)"]
                    else:
                        cells += ["", ""]
                table.add_row(*cells)
        console.print(table)
    rounds = len(rows[0].fwd.impl) if rows and rows[0].fwd else 0
    console.print(
        f"ms = median of {rounds} interleaved rounds ± half the interquartile range, as % of the median. "
        "ratio = your time / the reference's, measured in the same rounds (below 1.00x: faster); "
        "(range) = the lowest and highest ratio of a single round. "
        "peak MB = memory allocated during one forward+backward, yours/the reference's."
    )
    shaky = [r for r in rows if r.unreliable]
    if shaky:
        console.print(
            f"warning: {len(shaky)} of {len(rows)} rows are marked '!': their rounds disagree by more than "
            f"{UNRELIABLE_SPREAD:.0%}, so those ratios are unreliable (a busy machine?). Close other programs, "
            "or raise --min-time / --repeats."
        )


def _ms(t: Timing, side: str) -> str:
    q1, q3 = t.iqr(side)
    med = t.impl_ms if side == "impl" else t.ref_ms
    return f"{med:.3f} ±{50 * (q3 - q1) / med:.0f}%" if med > 0 else f"{med:.3f}"


def _ratio(t: Timing) -> str:
    ratios = t.ratios
    mark = " !" if t.unreliable else ""
    return f"{t.impl_ms / t.ref_ms:.2f}x {min(ratios):.2f}-{max(ratios):.2f}{mark}"


def grading_threads() -> int:
    """The CPU thread count grading uses: the grader's child sets OMP_NUM_THREADS=1 unless you set it."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


def _parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise BenchError(f"--sizes {text!r}: expected comma-separated integers like 64,128,256") from None
    if not sizes or min(sizes) < 1:
        raise BenchError(f"--sizes {text!r}: every size must be a positive integer")
    return sizes


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[no-untyped-def]
        raise BenchError(f"{message} (see `nox -s bench -- --help`)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["2.4"]:  # generation has its own harness: tokens/s with and without the KV cache
        from grader.bench_generation import main as bench_generation

        return bench_generation(argv[1:])
    if argv[:1] == ["2.1"]:  # the tokenizer has no tensors to time: its benchmark is a program of its own
        from grader.bench_tokenizer import main as bench_tokenizer

        return bench_tokenizer(argv[1:])
    p = _Parser(prog="nox -s bench --", description="Time a stage against the torch reference.")
    p.add_argument("stage", help=f"one of {', '.join(BENCHES)}")
    p.add_argument("--version", choices=("skeleton", "solution"), default="skeleton")
    p.add_argument("--device", choices=("cpu", "cuda", "mps"), default=None, help="default: cuda > mps > cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--sizes", default=None, help="sequence lengths, e.g. 64,128,256 (default depends on device)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--min-time", type=float, default=0.2, help="seconds of timing per measurement, both sides (default 0.2)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds per measurement (default 7)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: as grading, OMP_NUM_THREADS or 1)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    try:
        args = p.parse_args(argv)
        if args.stage not in BENCHES:
            raise BenchError(f"no benchmark for stage {args.stage!r}; stages with one: {', '.join(BENCHES)}")
        if args.repeats < 2:
            raise BenchError(f"--repeats {args.repeats}: need at least 2 rounds to measure a spread")
        if args.threads is not None and args.threads < 1:
            raise BenchError(f"--threads {args.threads}: must be at least 1")
        if args.min_time <= 0:
            raise BenchError(f"--min-time {args.min_time}: must be positive")
        if args.batch < 1:
            raise BenchError(f"--batch {args.batch}: must be at least 1")
        os.environ["LLMFS_VERSION"] = args.version
        import torch

        threads = args.threads or grading_threads()
        torch.set_num_threads(threads)

        device = args.device or ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise BenchError("--device cuda: no CUDA device here (nox -s doctor says why)")
        if device == "mps" and not torch.backends.mps.is_available():
            raise BenchError("--device mps: no Apple MPS device here")
        if device == "cpu" and args.dtype == "float16":
            raise BenchError("--dtype float16 on the CPU is slow emulation; use float32 or bfloat16")
        sizes = _parse_sizes(args.sizes) if args.sizes else ([64, 128, 256, 512] if device == "cpu" else [256, 512, 1024, 2048, 4096])
        if args.d_model % args.heads:
            raise BenchError(f"--d-model {args.d_model} is not divisible by --heads {args.heads}")
        try:
            rows = run(args.stage, device, args.dtype, sizes, args.batch, args.d_model, args.heads, args.min_time, args.repeats)
        except NotImplementedError as exc:
            raise BenchError(
                f"stage {args.stage} ({args.version}) is not implemented yet ({exc}): implement it, or bench the"
                f" reference with `nox -s bench -- {args.stage} --version solution`"
            ) from None
        except Exception as exc:  # the learner's module failed while running: one line, no traceback
            raise BenchError(f"stage {args.stage} ({args.version}) failed while running: {type(exc).__name__}: {exc}") from None
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        usage = "no benchmark" in str(exc) or str(exc).startswith("--") or "(see `nox -s bench -- --help`)" in str(exc)
        return 2 if usage else 1
    header = (f"Stage {args.stage} ({args.version}) on {device}, {args.dtype}, batch {args.batch}, d_model {args.d_model}, "
              f"{args.heads} heads, torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)"
              f" ({'--threads' if args.threads else 'as grading uses; --threads N to change'})")  # fmt: skip
    render(rows, args.stage, device, args.dtype, header)
    if args.json:
        from pathlib import Path

        from grader.progress import write_atomic

        data = [r.to_json() for r in rows]
        doc = {"stage": args.stage, "version": args.version, "device": device, "dtype": args.dtype,
               "threads": torch.get_num_threads(), "repeats": args.repeats, "rows": data}  # fmt: skip
        try:
            write_atomic(Path(args.json), json.dumps(doc, indent=2))
        except OSError as exc:
            print(f"bench: cannot write {args.json}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
