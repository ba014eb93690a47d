"""Stage 1.1's pictures (``nox -s show -- 1.1``): the sinusoidal table, its dot products, a learned table.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import torch

from shared.figures import Figure, heatmap, to_numpy

MAX_LEN, D_MODEL = 100, 64  # the heatmaps: 100 positions x 64 dimensions
OFFSETS = 96  # the dot-product curve: k = 0 .. OFFSETS - 1
STARTS = (0, 16, 48)  # ... from these positions p


def table_data(m: ModuleType) -> dict[str, Any]:
    """PE (MAX_LEN, D_MODEL) from your sinusoidal_table."""
    return {"table": to_numpy(m.sinusoidal_table(MAX_LEN, D_MODEL))}  # (max_len, d_model)


def draw_table(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    heatmap(ax, data["table"], cmap="RdBu_r", vmin=-1, vmax=1, xlabel="dimension i (even: sin, odd: cos)",
            ylabel="position", colorbar=True)  # fmt: skip


def dots_data(m: ModuleType) -> dict[str, Any]:
    """PE(p) . PE(p + k) for k = 0 .. OFFSETS-1 and each p in STARTS, from your table."""
    table = to_numpy(m.sinusoidal_table(max(STARTS) + OFFSETS, D_MODEL))  # (L, d_model)
    dots = np.stack([table[p + np.arange(OFFSETS)] @ table[p] for p in STARTS])  # (len(STARTS), OFFSETS)
    return {"k": np.arange(OFFSETS), "starts": list(STARTS), "dots": dots}


def draw_dots(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    for p, row, style in zip(data["starts"], data["dots"], ("-", "--", ":"), strict=False):
        ax.plot(data["k"], row, style, lw=1.4, label=f"p = {p}")
    ax.set_xlabel("offset k", fontsize=8)
    ax.set_ylabel("PE(p) · PE(p + k)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def learned_data(m: ModuleType) -> dict[str, Any]:
    """The rows your LearnedPositionalEmbedding adds, at initialisation (seed 0): forward of zeros."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        emb = m.LearnedPositionalEmbedding(D_MODEL, MAX_LEN)
    with torch.no_grad():
        table = emb(torch.zeros(1, MAX_LEN, D_MODEL))[0]  # (max_len, d_model): x + P[:T] with x = 0
    return {"table": to_numpy(table)}


def draw_learned(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    heatmap(ax, data["table"], cmap="RdBu_r", vmin=-3, vmax=3, xlabel="dimension", ylabel="position", colorbar=True)


FIGURES: list[Figure] = [
    Figure(
        "sinusoidal-table", "The sinusoidal table PE[pos, i]", table_data, draw_table,
        caption="Low dimensions oscillate fast down the positions, high dimensions slowly: every row is a different pattern.",
        size=(4.2, 3.2),
    ),
    Figure(
        "dot-product-by-offset", "PE(p) · PE(p + k) depends on the offset k only", dots_data, draw_dots,
        caption="The three curves lie on top of each other: the dot product depends on the distance k, not on p.",
        size=(4.2, 3.0),
    ),
    Figure(
        "learned-table", "A learned table before training: noise", learned_data, draw_learned,
        caption="nn.Embedding starts at N(0, 1) noise: the order of positions must be learned from data.",
        size=(4.2, 3.2),
    ),
]  # fmt: skip
