"""Stage 1.5b's pictures (``nox -s show -- 1.5b``): LayerNorm's effect per token, and the depth experiment.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import torch

from shared.figures import Figure, to_numpy

T, D = 8, 64
DEPTHS = (1, 2, 4, 6, 12, 24)  # the lesson prints 1, 6, 12 and 24


def stats_data(m: ModuleType) -> dict[str, Any]:
    """Per-token mean and (biased) std of 8 tokens with different offsets and scales, before and after your LayerNorm."""
    g = torch.Generator().manual_seed(0)
    offsets = torch.linspace(-3, 3, T)[:, None]  # (T, 1)
    scales = torch.logspace(-0.5, 0.8, T)[:, None]  # (T, 1)
    x = torch.randn(T, D, generator=g) * scales + offsets  # (T, D)
    with torch.no_grad():
        y = m.LayerNorm(D)(x)  # (T, D)
    return {"mean_before": to_numpy(x.mean(-1)), "std_before": to_numpy(x.std(-1, correction=0)),
            "mean_after": to_numpy(y.mean(-1)), "std_after": to_numpy(y.std(-1, correction=0))}  # fmt: skip


def draw_stats(panel: Any, data: dict[str, Any]) -> None:
    left, right = panel.subplots(1, 2)
    tokens = np.arange(len(data["mean_before"]))
    for ax, stat, title in ((left, "mean", "per-token mean"), (right, "std", "per-token std")):
        ax.bar(tokens - 0.2, data[f"{stat}_before"], width=0.4, label="before", color="0.6")
        ax.bar(tokens + 0.2, data[f"{stat}_after"], width=0.4, label="after LayerNorm")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("token", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.axhline(0, color="0.3", lw=0.6)
        ax.grid(alpha=0.3, axis="y")
    left.legend(fontsize=7)


def depth_data(m: ModuleType) -> dict[str, Any]:
    """Your last_layer_grad_norm for each depth, pre-LN and post-LN."""
    pre = [float(m.last_layer_grad_norm(L, True)) for L in DEPTHS]
    post = [float(m.last_layer_grad_norm(L, False)) for L in DEPTHS]
    return {"depths": list(DEPTHS), "pre_ln": np.array(pre), "post_ln": np.array(post)}


def draw_depth(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    ax.plot(data["depths"], data["pre_ln"], "o-", lw=1.4, label="pre-LN  x + f(norm(x))")
    ax.plot(data["depths"], data["post_ln"], "s--", lw=1.4, label="post-LN  norm(x + f(x))")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("depth (blocks)", fontsize=8)
    ax.set_ylabel("top-layer gradient norm", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")


FIGURES: list[Figure] = [
    Figure(
        "token-stats", "Each token before and after LayerNorm", stats_data, draw_stats,
        caption="Whatever a token's mean and spread, after LayerNorm (weight 1, bias 0) it has mean 0 and std 1.",
        size=(6.4, 2.6), stack="v",
    ),
    Figure(
        "depth-experiment", "Top-layer gradient at initialisation vs depth", depth_data, draw_depth,
        caption="Post-LN's top-layer gradient is as large at depth 24 as at depth 1; pre-LN's shrinks with depth.",
        size=(4.2, 3.0),
    ),
]  # fmt: skip
