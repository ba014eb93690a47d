"""``nox -s bench -- <stage> [--version skeleton|solution] [--device cpu|cuda|mps] ...``

Times a stage's implementation against the torch reference over a sweep of sequence
lengths, forward and forward+backward, and prints a rich table: the median time of
each, the ratio to the reference measured in the same run (``1.07x`` = 7% slower),
the peak memory of one forward+backward (attention's grows as O(T^2)), and on a GPU
the achieved TFLOP/s and MFU (model FLOPs utilisation) against the device's peak.

Timing: ``torch.utils.benchmark.Timer.blocked_autorange`` (median of blocks, after a
warm-up) on the CPU; CUDA events around each run on CUDA; synchronised wall clock on MPS.
Memory: ``torch.cuda.max_memory_allocated`` on CUDA; elsewhere, the peak of the bytes of
tensor storage alive during the pass, tracked by a ``TorchDispatchMode``.

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
from typing import Any

STAGES = ("1.3", "1.4", "1.5a", "1.5b", "1.6")


class BenchError(Exception):
    """One line for the user; exit 1 (or 2 for usage)."""


@dataclass
class Case:
    name: str  # the row label: "MultiHeadAttention", "MultiHeadAttention (use_sdpa)"
    reference_name: str  # what it is timed against
    build: Callable[[], tuple[Any, Any]]  # -> (learner module, reference module), same shapes
    call: Callable[[Any, Any], Any]  # (module, x) -> output tensor
    ref_call: Callable[[Any, Any], Any]


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

    @property
    def ratio_fwd(self) -> float:
        return self.fwd_ms / self.ref_fwd_ms

    @property
    def ratio_fb(self) -> float:
        return self.fb_ms / self.ref_fb_ms


# ----------------------------------------------------------------------------- the cases per stage


def cases(stage: str, d_model: int, n_heads: int) -> list[Case]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from shared.loader import load

    impl = load(stage)
    d_head = d_model // n_heads

    if stage == "1.3":

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
    if stage == "1.4":

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
    if stage == "1.5a":

        def ref_ff() -> nn.Module:
            return nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Dropout(0.0), nn.Linear(4 * d_model, d_model))

        return [Case("FeedForward (d_ff = 4 d_model)", "nn.Linear -> nn.GELU -> nn.Linear",
                     lambda: (impl.FeedForward(d_model), ref_ff()), lambda m, x: m(x), lambda m, x: m(x))]  # fmt: skip
    if stage == "1.5b":
        return [Case("LayerNorm", "nn.LayerNorm", lambda: (impl.LayerNorm(d_model), nn.LayerNorm(d_model)),
                     lambda m, x: m(x), lambda m, x: m(x))]  # fmt: skip
    if stage == "1.6":

        def ref_block(norm_first: bool) -> nn.Module:
            return nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, activation="gelu",
                                              batch_first=True, norm_first=norm_first)  # fmt: skip

        return [
            Case(f"EncoderBlock ({'pre' if nf else 'post'}-LN)", "nn.TransformerEncoderLayer(gelu, batch_first)",
                 (lambda nf=nf: (impl.EncoderBlock(d_model, n_heads, 4 * d_model, dropout=0.0, norm_first=nf), ref_block(nf))),
                 lambda m, x: m(x), lambda m, x: m(x))
            for nf in (False, True)
        ]  # fmt: skip
    raise BenchError(f"no benchmark for stage {stage}")


# ----------------------------------------------------------------------------- measuring


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def time_ms(fn: Callable[[], Any], device: str, min_run_time: float) -> float:
    """Median milliseconds per call of ``fn``."""
    import torch

    fn()  # warm-up: lazy init, allocator, kernels' first-call costs
    _sync(device)
    if device == "cuda":
        times = []
        deadline = time.perf_counter() + max(min_run_time, 0.05)
        while time.perf_counter() < deadline or len(times) < 5:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)
    if device == "mps":
        times = []
        deadline = time.perf_counter() + max(min_run_time, 0.05)
        while time.perf_counter() < deadline or len(times) < 5:
            t0 = time.perf_counter()
            fn()
            torch.mps.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    from torch.utils.benchmark import Timer

    m = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=min_run_time)
    return m.median * 1e3


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
        min_run_time: float) -> list[Row]:  # fmt: skip
    import torch

    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    rows: list[Row] = []
    for case in cases(stage, d_model, n_heads):
        learner, reference = case.build()
        learner = learner.to(device=device, dtype=dt).train()
        reference = reference.to(device=device, dtype=dt).train()
        for T in sizes:
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
                    x.grad = None

                return f

            rows.append(
                Row(
                    case=case.name, T=T,
                    fwd_ms=time_ms(fwd(learner, case.call), device, min_run_time),
                    ref_fwd_ms=time_ms(fwd(reference, case.ref_call), device, min_run_time),
                    fb_ms=time_ms(fb(learner, case.call), device, min_run_time),
                    ref_fb_ms=time_ms(fb(reference, case.ref_call), device, min_run_time),
                    mem_mb=peak_memory_mb(fb(learner, case.call), device),
                    ref_mem_mb=peak_memory_mb(fb(reference, case.ref_call), device),
                    flops_fb=count_flops(fb(learner, case.call)),
                    extra={"reference": case.reference_name},
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
        for col in ("T", "fwd ms", "ref fwd ms", "fwd ratio", "fwd+bwd ms", "ref fwd+bwd ms", "fwd+bwd ratio",
                    "peak MB", "ref peak MB"):  # fmt: skip
            table.add_column(col, justify="right", no_wrap=True)
        if device == "cuda":
            table.add_column("TFLOP/s", justify="right")
            table.add_column("MFU", justify="right")
        for r in case_rows:
            cells = [
                str(r.T), f"{r.fwd_ms:.3f}", f"{r.ref_fwd_ms:.3f}", f"{r.ratio_fwd:.2f}x", f"{r.fb_ms:.3f}",
                f"{r.ref_fb_ms:.3f}", f"{r.ratio_fb:.2f}x",
                "-" if r.mem_mb is None else f"{r.mem_mb:.1f}", "-" if r.ref_mem_mb is None else f"{r.ref_mem_mb:.1f}",
            ]  # fmt: skip
            if device == "cuda":
                tflops = r.flops_fb / (r.fb_ms / 1e3) / 1e12
                cells += [f"{tflops:.1f}", f"{100 * tflops / peak:.1f}%" if peak else "- (peak unknown)"]
            table.add_row(*cells)
        console.print(table)
    console.print(
        "ratio = your time / the reference's, measured in the same run (below 1.00x: faster). "
        "peak MB = memory allocated during one forward+backward."
    )


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
    p = _Parser(prog="nox -s bench --", description="Time a stage against the torch reference.")
    p.add_argument("stage", help=f"one of {', '.join(STAGES)}")
    p.add_argument("--version", choices=("skeleton", "solution"), default="skeleton")
    p.add_argument("--device", choices=("cpu", "cuda", "mps"), default=None, help="default: cuda > mps > cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--sizes", default=None, help="sequence lengths, e.g. 64,128,256 (default depends on device)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--min-time", type=float, default=0.2, help="seconds of timing per measurement (default 0.2)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    try:
        args = p.parse_args(argv)
        if args.stage not in STAGES:
            raise BenchError(f"no benchmark for stage {args.stage!r}; stages with one: {', '.join(STAGES)}")
        os.environ["LLMFS_VERSION"] = args.version
        import torch

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
            rows = run(args.stage, device, args.dtype, sizes, args.batch, args.d_model, args.heads, args.min_time)
        except NotImplementedError as exc:
            raise BenchError(f"stage {args.stage} ({args.version}) is not implemented yet ({exc}): grade it first") from None
        except Exception as exc:  # the learner's module failed while running: one line, no traceback
            raise BenchError(f"stage {args.stage} ({args.version}) failed while running: {type(exc).__name__}: {exc}") from None
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2 if "--" in str(exc) or "no benchmark" in str(exc) else 1
    header = (f"Stage {args.stage} ({args.version}) on {device}, {args.dtype}, batch {args.batch}, d_model {args.d_model}, "
              f"{args.heads} heads, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")  # fmt: skip
    render(rows, args.stage, device, args.dtype, header)
    if args.json:
        from pathlib import Path

        from grader.progress import write_atomic

        data = [{**r.__dict__, "ratio_fwd": r.ratio_fwd, "ratio_fb": r.ratio_fb} for r in rows]
        write_atomic(Path(args.json), json.dumps({"stage": args.stage, "device": device, "dtype": args.dtype, "rows": data}, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
