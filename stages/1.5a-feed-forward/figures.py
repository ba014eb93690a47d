"""Stage 1.5a's pictures (``nox -s show -- 1.5a``): GELU (exact and tanh) beside ReLU, and their differences.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
ReLU is torch.relu, drawn for comparison.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from shared.figures import Figure, to_numpy


def gelu_data(m: ModuleType) -> dict[str, Any]:
    """Your gelu (both forms) and torch.relu on x in [-4, 4]."""
    x = torch.linspace(-4, 4, 161, dtype=torch.float64)  # (161,)
    return {"x": to_numpy(x), "exact": to_numpy(m.gelu(x)), "tanh": to_numpy(m.gelu(x, approximate="tanh")),
            "relu": to_numpy(torch.relu(x))}  # fmt: skip


def draw_gelu(panel: Any, data: dict[str, Any]) -> None:
    left, right = panel.subplots(1, 2)
    x = data["x"]
    left.plot(x, data["relu"], color="0.6", lw=1.2, label="ReLU")
    left.plot(x, data["exact"], lw=1.6, label="GELU (exact, erf)")
    left.plot(x, data["tanh"], "--", lw=1.2, label="GELU (tanh)")
    left.set_title("the activations", fontsize=9)
    left.legend(fontsize=7)
    right.plot(x, data["exact"] - data["relu"], lw=1.4, label="GELU − ReLU")
    right.plot(x, 100 * (data["tanh"] - data["exact"]), "--", lw=1.2, label="100 × (tanh − exact)")
    right.set_title("the differences", fontsize=9)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.axhline(0, color="0.8", lw=0.8)
        ax.set_xlabel("x", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)


FIGURES: list[Figure] = [
    Figure(
        "gelu", "GELU vs ReLU", gelu_data, draw_gelu,
        caption="GELU is a smooth ReLU that dips below 0 near x = -0.75; the tanh form differs from the exact one by under 0.001.",
        size=(6.4, 2.8), stack="v",
    ),
]  # fmt: skip
