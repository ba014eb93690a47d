"""A learner's Stage 0.2 file (amp_bf16_hardcoded).

mistake: the autocast dtype hard-coded to bfloat16
expect: hard-coded
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "pick_device",
    "autocast_dtype",
    "make_grad_scaler",
    "amp_train_step",
    "matmul_tflops",
    "top_ops_by_self_time",
    "export_chrome_trace",
]

#: The device types this course runs on, fastest first.
DEVICE_ORDER: tuple[str, ...] = ("cuda", "mps", "cpu")

#: What to do when an explicitly requested device is missing.
HOW_TO_GET = {
    "cuda": (
        "install a CUDA build of PyTorch (e.g. pip install torch --index-url https://download.pytorch.org/whl/cu128)"
        " on a machine with an NVIDIA GPU and driver; check with `nvidia-smi` and `nox -s doctor`"
    ),
    "mps": "MPS needs an Apple-silicon Mac with macOS 14+ and the standard macOS arm64 wheel (pip install torch)",
    "cpu": "",
}


# ---------------------------------------------------------------- Task 1: pick_device


def _available(kind: str) -> bool:
    """Is a device of this type usable right now?"""
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return torch.backends.mps.is_available()
    return kind == "cpu"


def pick_device(prefer: str | None = None) -> torch.device:
    """The device to train on.

    Args:
        prefer: None or "auto": the fastest available, cuda > mps > cpu.
            "cpu", "cuda", "cuda:1", "mps": exactly that device.
    Returns:
        a ``torch.device``.
    Raises:
        ValueError: ``prefer`` names no device type this course knows ("gpu", "tpu", ...).
        RuntimeError: ``prefer`` names a device that is absent here, including "cuda:N" with
            N >= torch.cuda.device_count(); the message says how to get it.
    """
    if prefer is None or prefer == "auto":
        for kind in DEVICE_ORDER:
            if _available(kind):
                return torch.device(kind)
    kind = str(prefer).split(":", 1)[0].strip().lower()
    if kind not in DEVICE_ORDER:
        raise ValueError(f"unknown device {prefer!r}: expected None, 'auto', 'cuda', 'cuda:N', 'mps' or 'cpu'")
    if not _available(kind):
        raise RuntimeError(f"device {prefer!r} was requested but is not available here: {HOW_TO_GET[kind]}")
    device = torch.device(str(prefer).strip().lower())
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(
            f"device {prefer!r} was requested but this machine has {torch.cuda.device_count()} CUDA device(s)"
            f" (cuda:0 .. cuda:{torch.cuda.device_count() - 1}); `nox -s doctor` lists them"
        )
    return device


# ---------------------------------------------------------------- Task 2: autocast_dtype


def _mps_has_bf16() -> bool:
    """bfloat16 on MPS needs macOS 14 (Sonoma) or newer (and PyTorch 2.6+ for bf16 autocast)."""
    return torch.backends.mps.is_macos_or_newer(14, 0)


def autocast_dtype(device: torch.device | str) -> torch.dtype:
    """The lower-precision dtype to autocast to on ``device``.

    cpu   -> bfloat16 (the only reduced dtype CPU kernels are tuned for)
    cuda  -> bfloat16 when the GPU has it in hardware (Ampere, compute capability 8.0+), else float16
    mps   -> bfloat16 on macOS 14+, else float16
    Raises ValueError for other device types.
    """
    kind = torch.device(device).type
    if kind == "cpu":
        return torch.bfloat16
    if kind == "cuda":
        # including_emulation=False: a T4 or V100 can *emulate* bf16, slowly; fp16 is what its tensor cores do.
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if kind == "mps":
        return torch.bfloat16 if _mps_has_bf16() else torch.float16
    raise ValueError(f"no autocast policy for device type {kind!r}")


# ---------------------------------------------------------------- Task 3: make_grad_scaler and amp_train_step


def make_grad_scaler(device: torch.device | str, dtype: torch.dtype) -> torch.amp.GradScaler:
    """A GradScaler for training on ``device`` with autocast ``dtype``: enabled only for float16.

    float16 has 5 exponent bits: small gradients underflow to 0, so the loss is multiplied
    by a large scale before backward and the gradients divided by it before the step.
    bfloat16 keeps float32's 8 exponent bits, so it needs no scaling: the scaler is disabled
    (every method then passes through).
    """
    kind = torch.device(device).type
    return torch.amp.GradScaler(kind, enabled=dtype == torch.float16)


def amp_train_step(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    device: torch.device | str,
    dtype: torch.dtype,
    max_grad_norm: float = 1.0,
) -> float:
    """One mixed-precision training step of a regression model; returns the loss as a float.

    Args:
        model: already on ``device``; maps inputs (B, d_in) to predictions (B, d_out).
        batch: (inputs (B, d_in), targets (B, d_out)), on any device (moved here).
        scaler: an enabled GradScaler for float16; None or a disabled one otherwise.
        dtype: the autocast dtype; float32 turns autocast off.
        max_grad_norm: clip the total gradient norm (of the *unscaled* gradients) to this.
    Returns:
        the batch's loss, mse_loss(model(inputs).float(), targets), before the update.
    """
    device = torch.device(device)
    inputs, targets = (t.to(device) for t in batch)
    use_amp = dtype in (torch.float16, torch.bfloat16)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
        pred = model(inputs)  # (B, d_out), in dtype under autocast
        loss = F.mse_loss(pred.float(), targets.float())  # the loss in float32
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()  # gradients are multiplied by the scale
        scaler.unscale_(optimizer)  # ... divided back, so clipping sees true gradients
        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        scaler.step(optimizer)  # skips the step if any gradient is inf/NaN
        scaler.update()  # grow or shrink the scale
    else:
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


# ---------------------------------------------------------------- Task 4: matmul_tflops


def _synchronize(device: torch.device) -> None:
    """Wait until every queued kernel on ``device`` has finished (CUDA and MPS run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_tflops(
    n: int = 512, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, repeats: int = 5
) -> float:
    """Measured throughput of an (n, n) @ (n, n) matmul, in TFLOP/s (10^12 floating-point operations per second).

    One warm-up matmul first (it pays for lazy initialisation and kernel selection), then
    ``repeats`` timed matmuls between two synchronisations; a matmul costs 2 n^3 FLOPs
    (n^3 multiply-adds). Reads the clock with ``time.perf_counter()``.
    """
    device = torch.device(device)
    a = torch.randn(n, n, device=device, dtype=dtype)  # (n, n)
    b = torch.randn(n, n, device=device, dtype=dtype)  # (n, n)
    a @ b  # warm-up, not timed
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _synchronize(device)  # the kernels are queued; wait for them before reading the clock
    seconds_per_matmul = (time.perf_counter() - start) / repeats
    return 2 * n**3 / seconds_per_matmul / 1e12


# ---------------------------------------------------------------- Task 5: profiling


def _activities(device: torch.device) -> list[torch.profiler.ProfilerActivity]:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts


def top_ops_by_self_time(
    fn: Callable[[], object], k: int = 5, device: torch.device | str = "cpu"
) -> list[tuple[str, float]]:
    """Profile one call of ``fn`` and return the ``k`` operators with the largest *self* time.

    Self time is the time spent in the operator itself, not in the operators it calls
    (``aten::matmul`` calls ``aten::mm``: its self time is tiny, its total time is not).
    On CUDA the GPU's self time is used, on CPU and MPS the CPU's.
    Returns [(op name, self time in microseconds), ...], largest first.
    """
    device = torch.device(device)
    with torch.profiler.profile(activities=_activities(device)) as prof:
        fn()
        _synchronize(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    return [(e.key, float(getattr(e, key))) for e in events[:k]]


def export_chrome_trace(fn: Callable[[], object], path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Path:
    """Profile one call of ``fn`` and write a Chrome trace (JSON with "traceEvents") to ``path``.

    Open it in https://ui.perfetto.dev or chrome://tracing. Returns the path written.
    """
    device = torch.device(device)
    path = Path(path)
    with torch.profiler.profile(activities=_activities(device)) as prof:
        fn()
        _synchronize(device)
    prof.export_chrome_trace(str(path))
    return path
