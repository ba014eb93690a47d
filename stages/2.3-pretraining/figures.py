"""Stage 2.3's pictures (``nox -s show -- 2.3``): the learning-rate schedule your ``lr_at`` gives.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
The schedule is nanoGPT's: linear warmup, then a cosine decay to a floor (Loshchilov & Hutter, 2017).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from shared.figures import Figure

MAX_LR, MIN_LR, WARMUP, MAX_STEPS, SHOWN = 1e-3, 1e-4, 100, 1000, 1200


def schedule_data(m: ModuleType) -> dict[str, Any]:
    """lr_at(step) for steps 0 .. 1199 (warmup 100, decay until 1000, then the floor)."""
    steps = np.arange(SHOWN)
    lr = np.array([float(m.lr_at(int(s), MAX_LR, MIN_LR, WARMUP, MAX_STEPS)) for s in steps])
    return {"steps": steps, "lr": lr, "warmup": WARMUP, "max_steps": MAX_STEPS, "max_lr": MAX_LR, "min_lr": MIN_LR}


def draw_schedule(panel: Any, data: dict[str, Any]) -> None:
    left, right = panel.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    s, lr = data["steps"], data["lr"]
    left.plot(s, lr, lw=1.6)
    for x, label in ((data["warmup"], "end of warmup"), (data["max_steps"], "max_steps: the floor")):
        left.axvline(x, color="0.6", lw=0.8, ls="--")
        left.text(x, data["max_lr"] * 1.02, label, fontsize=7, ha="center", va="bottom")
    left.axhline(data["min_lr"], color="0.8", lw=0.8)
    left.set_ylim(0, data["max_lr"] * 1.12)
    left.set_title("lr_at(step)", fontsize=9)
    left.set_xlabel("optimizer step", fontsize=8)
    w = data["warmup"]
    right.plot(s[: w + 5], lr[: w + 5], "o-", ms=2, lw=1)
    right.set_title("warmup: step 0 already learns", fontsize=8)
    right.set_xlabel("optimizer step", fontsize=8)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)


FIGURES: list[Figure] = [
    Figure(
        "lr-schedule", "The learning-rate schedule", schedule_data, draw_schedule,
        caption="Linear warmup to max_lr by step warmup-1, a cosine decay that reaches min_lr at max_steps, then the floor.",
        size=(6.4, 2.6), stack="v",
    ),
]  # fmt: skip
