"""Stage 0.2 — your machine: devices, mixed precision, throughput and profiling.

Your tasks (the lesson, README.md, walks through each one):
  Task 1  pick_device            cuda > mps > cpu, or exactly the device asked for
  Task 2  autocast_dtype         bf16 or fp16: which reduced precision this device does well
  Task 3  make_grad_scaler       loss scaling for fp16 only
          amp_train_step         one mixed-precision training step: autocast, scale, unscale_, clip, step
  Task 4  matmul_tflops          measure your device's matmul throughput honestly
  Task 5  top_ops_by_self_time   read a profile: which operators take the time
          export_chrome_trace    save a timeline you can open in ui.perfetto.dev

Grade your work with:  nox -s grade -- 0.2
"""

from __future__ import annotations

import os
import time  # noqa: F401  (Task 4: read the clock as time.perf_counter())
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: F401  (Task 3: F.mse_loss)
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


# ---------------------------------------------------------------- Task 1: pick_device


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
            N >= torch.cuda.device_count(); the message names it and says how to get it.
    """
    # TODO(Task 1): with no preference, try torch.cuda.is_available(), then torch.backends.mps.is_available(),
    #   then fall back to the CPU. With a preference, check the name first (ValueError), then that the device
    #   is there (RuntimeError, e.g. "cuda requested but not available: install a CUDA build of PyTorch ...").
    raise NotImplementedError("Task 1: pick_device")


# ---------------------------------------------------------------- Task 2: autocast_dtype


def autocast_dtype(device: torch.device | str) -> torch.dtype:
    """The lower-precision dtype to autocast to on ``device``.

    cpu   -> bfloat16
    cuda  -> bfloat16 when the GPU has it in hardware (compute capability 8.0+), else float16
    mps   -> bfloat16 on macOS 14+, else float16
    Raises ValueError for other device types.
    """
    # TODO(Task 2): torch.device(device).type tells you the kind. For CUDA ask
    #   torch.cuda.is_bf16_supported(including_emulation=False); for MPS ask
    #   torch.backends.mps.is_macos_or_newer(14, 0).
    raise NotImplementedError("Task 2: autocast_dtype")


# ---------------------------------------------------------------- Task 3: make_grad_scaler and amp_train_step


def make_grad_scaler(device: torch.device | str, dtype: torch.dtype) -> torch.amp.GradScaler:
    """A GradScaler for training on ``device`` with autocast ``dtype``: enabled only for float16."""
    # TODO(Task 3): torch.amp.GradScaler(<device type string>, enabled=...).
    raise NotImplementedError("Task 3: make_grad_scaler")


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
        batch: (inputs (B, d_in), targets (B, d_out)), on any device (move them to ``device``).
        optimizer: updates ``model``'s parameters.
        scaler: an enabled GradScaler for float16; None or a disabled one otherwise.
        device: where ``model`` lives.
        dtype: the autocast dtype; float32 turns autocast off.
        max_grad_norm: clip the total gradient norm (of the *unscaled* gradients) to this.
    Returns:
        the batch's loss, F.mse_loss(model(inputs).float(), targets), before the update, as a Python float.
    """
    # TODO(Task 3): forward and loss under torch.autocast(device_type, dtype=dtype, enabled=<fp16 or bf16>).
    #   With an enabled scaler: scaler.scale(loss).backward(); scaler.unscale_(optimizer); clip with
    #   nn.utils.clip_grad_norm_; scaler.step(optimizer); scaler.update().
    #   Without one: loss.backward(); clip; optimizer.step().
    #   Then optimizer.zero_grad() and return loss.item().
    raise NotImplementedError("Task 3: amp_train_step")


# ---------------------------------------------------------------- Task 4: matmul_tflops


def matmul_tflops(
    n: int = 512, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, repeats: int = 5
) -> float:
    """Measured throughput of an (n, n) @ (n, n) matmul, in TFLOP/s (10^12 floating-point operations per second).

    One warm-up matmul first, then ``repeats`` timed matmuls between two synchronisations;
    a matmul costs 2 n^3 FLOPs. Read the clock as ``time.perf_counter()``.
    """
    # TODO(Task 4): make two (n, n) tensors on the device, run one untimed matmul, synchronise
    #   (torch.cuda.synchronize() / torch.mps.synchronize(); nothing on the CPU), start the clock,
    #   run `repeats` matmuls, synchronise again, stop the clock; return 2 n^3 / seconds-per-matmul / 1e12.
    raise NotImplementedError("Task 4: matmul_tflops")


# ---------------------------------------------------------------- Task 5: profiling


def top_ops_by_self_time(
    fn: Callable[[], object], k: int = 5, device: torch.device | str = "cpu"
) -> list[tuple[str, float]]:
    """Profile one call of ``fn`` and return the ``k`` operators with the largest *self* time.

    On CUDA use the GPU's self time (``self_device_time_total``), on CPU and MPS the CPU's
    (``self_cpu_time_total``). Returns [(op name, self time in microseconds), ...], largest first.
    """
    # TODO(Task 5): `with torch.profiler.profile(activities=[...]) as prof: fn()`, then sort
    #   prof.key_averages() by self time; each entry has .key (the op name).
    raise NotImplementedError("Task 5: top_ops_by_self_time")


def export_chrome_trace(fn: Callable[[], object], path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Path:
    """Profile one call of ``fn`` and write a Chrome trace (JSON with "traceEvents") to ``path``.

    Returns the path written, as a ``pathlib.Path``.
    """
    # TODO(Task 5): profile as above, then prof.export_chrome_trace(str(path)).
    raise NotImplementedError("Task 5: export_chrome_trace")
