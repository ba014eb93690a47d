"""Stage 1.4's pictures (``nox -s show -- 1.4``): each head's attention map on one input, and their average.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from shared.figures import Figure, heatmap, to_numpy

T, D_MODEL, N_HEADS = 8, 32, 4


def heads_data(m: ModuleType) -> dict[str, Any]:
    """Your MultiHeadAttention (seed 0), causal self-attention on one random input: per-head and averaged weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mha = m.MultiHeadAttention(D_MODEL, N_HEADS).eval()
        x = torch.randn(1, T, D_MODEL) * 2.0  # (1, T, d_model): larger inputs give sharper, more distinct heads
    with torch.no_grad():
        _, per_head = mha(x, is_causal=True, need_weights=True, average_attn_weights=False)  # (1, h, T, T)
        _, averaged = mha(x, is_causal=True, need_weights=True)  # (1, T, T)
    return {"per_head": to_numpy(per_head[0]), "averaged": to_numpy(averaged[0])}


def draw_heads(panel: Any, data: dict[str, Any]) -> None:
    per_head = data["per_head"]
    axes = panel.subplots(1, len(per_head) + 1)
    for i, w in enumerate(per_head):
        heatmap(axes[i], w, title=f"head {i}", cmap="Greens", vmin=0, vmax=1)
    heatmap(axes[-1], data["averaged"], title="average of the heads", cmap="Greens", vmin=0, vmax=1)
    axes[0].set_ylabel("query", fontsize=8)
    for ax in axes:
        ax.set_xlabel("key", fontsize=8)


FIGURES: list[Figure] = [
    Figure(
        "heads", "Causal self-attention: each head's weights, and their average", heads_data, draw_heads,
        caption="Each head attends in its own way; the average over heads is what need_weights returns by default.",
        size=(8.0, 2.1), stack="v",
    ),
]  # fmt: skip
