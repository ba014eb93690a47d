"""Stage 0.2's pictures (``nox -s show -- 0.2``): your machine's matmul throughput, and a profile.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
Both pictures are *measurements of this machine*, so they are drawn from your code only (no
reference beside them: it would measure the same hardware) and are not committed to the lesson.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
import torch

from shared.figures import Figure, native_noise_dropped

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SIZE = {"cpu": 256, "cuda": 4096, "mps": 2048}  # n of the (n, n) @ (n, n) matmul: CPUs are slow in half precision


def _devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def throughput_data(m: ModuleType) -> dict[str, Any]:
    """Your matmul_tflops for each device present and each dtype; NaN where the device lacks the dtype."""
    devices = _devices()
    table = np.full((len(devices), len(DTYPES)), np.nan)
    for i, device in enumerate(devices):
        for j, dtype in enumerate(DTYPES):
            try:
                table[i, j] = float(m.matmul_tflops(SIZE[device], device, dtype, repeats=5))
            except NotImplementedError:
                raise
            except (RuntimeError, TypeError):  # e.g. bfloat16 on an older GPU: drawn as "n/a"
                pass
    labels = [torch.cuda.get_device_name() if d == "cuda" else d for d in devices]
    return {"devices": labels, "dtypes": [str(d).removeprefix("torch.") for d in DTYPES], "tflops": table,
            "sizes": [SIZE[d] for d in devices]}  # fmt: skip


def draw_throughput(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    table = np.asarray(data["tflops"], dtype=float)
    width = 0.8 / max(1, len(data["dtypes"]))
    x = np.arange(len(data["devices"]))
    for j, dtype in enumerate(data["dtypes"]):
        values = table[:, j]
        bars = ax.bar(x + (j - (len(data["dtypes"]) - 1) / 2) * width, np.nan_to_num(values, nan=0.0), width,
                      label=dtype)  # fmt: skip
        for bar, v in zip(bars, values, strict=True):
            text = "n/a" if math.isnan(v) else (f"{v:.3g}")
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, max(bar.get_height(), 1e-6)), ha="center",
                        va="bottom", fontsize=7)  # fmt: skip
    finite = table[np.isfinite(table) & (table > 0)]
    if finite.size and finite.max() / finite.min() > 50:  # CPU and GPU on one axis: orders of magnitude apart
        ax.set_yscale("log")
    ax.set_xticks(x, [f"{d}\n(n = {n})" for d, n in zip(data["devices"], data["sizes"], strict=True)], fontsize=8)
    ax.set_ylabel("TFLOP/s (2 n³ / time)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y", which="both")


def _workload() -> Any:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256))
    x = torch.randn(64, 256)  # (B, d)

    def step() -> None:
        net(x).square().mean().backward()

    return step


def profile_data(m: ModuleType) -> dict[str, Any]:
    """Your top_ops_by_self_time on one forward+backward of a small MLP on the CPU (top 8)."""
    step = _workload()
    step()  # warm-up, not profiled: the first call pays for lazy initialisation
    with native_noise_dropped():  # the profiler's native "USDT: ... profiler_start" lines
        top = m.top_ops_by_self_time(step, k=8, device="cpu")
    return {"ops": [str(name) for name, _ in top], "self_us": np.array([float(t) for _, t in top])}


def draw_profile(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    ops = list(data["ops"])[::-1]
    ms = np.asarray(data["self_us"], dtype=float)[::-1] / 1000.0
    ax.barh(range(len(ops)), ms, color="tab:orange")
    ax.set_yticks(range(len(ops)), [o if len(o) <= 40 else o[:37] + "..." for o in ops], fontsize=7)
    ax.set_xlabel("self time (ms)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, axis="x")


FIGURES: list[Figure] = [
    Figure(
        "matmul-throughput", "Measured matmul throughput on this machine", throughput_data, draw_throughput,
        caption="Half precision is fast on GPUs with tensor cores, and often slow on CPUs.",
        size=(5.0, 3.2), compare=False, lesson=False,
    ),
    Figure(
        "profiler-top-ops", "The profiler's top operators by self time (MLP forward + backward, CPU)",
        profile_data, draw_profile,
        caption="Most of the time goes to the matrix multiplies (aten::mm, aten::addmm).",
        size=(6.0, 3.0), compare=False, lesson=False,
    ),
]  # fmt: skip
