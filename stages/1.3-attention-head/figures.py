"""Stage 1.3's pictures (``nox -s show -- 1.3``): causal, padding and combined masks, and the weights they give.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
The padding mask and the combination of masks are built here; the causal mask and the weights are yours.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from shared.figures import Figure, heatmap, to_numpy

T, D = 6, 8  # 6 tokens, the last 2 of them padding
N_PAD = 2


def masks_data(m: ModuleType) -> dict[str, Any]:
    """Three masks (3, T, T) and your attention weights under each (3, T, T), on fixed random q, k, v."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, T, D, generator=g) for _ in range(3))  # (1, T, D) each
    causal = m.causal_mask(T).to(torch.bool)  # (T, T)
    pad = torch.zeros(T, dtype=torch.bool)
    pad[T - N_PAD :] = True
    padding = pad[None, :].expand(T, T)  # (T, T): the same keys blocked for every query
    masks = [causal, padding, causal | padding]
    weights = [m.attention(q, k, v, mask=mask)[1][0] for mask in masks]  # each (T, T)
    return {"masks": to_numpy(torch.stack(masks)), "weights": to_numpy(torch.stack(weights)),
            "names": ["causal", "padding (last 2 keys)", "causal | padding"]}  # fmt: skip


def draw_masks(panel: Any, data: dict[str, Any]) -> None:
    axes = panel.subplots(2, 3)
    for j, name in enumerate(data["names"]):
        heatmap(axes[0, j], data["masks"][j].astype(float), title=f"mask: {name}", cmap="Greys", vmin=0, vmax=1)
        heatmap(axes[1, j], data["weights"][j], title="weights", cmap="Greens", vmin=0, vmax=1,
                annotate=True, fmt="{:.1f}")  # fmt: skip
        axes[1, j].set_xlabel("key", fontsize=8)
    axes[0, 0].set_ylabel("query", fontsize=8)
    axes[1, 0].set_ylabel("query", fontsize=8)


FIGURES: list[Figure] = [
    Figure(
        "masks-and-weights", "Masks (black = blocked) and the attention weights they give", masks_data, draw_masks,
        caption="Blocked keys get weight exactly 0 and every row of weights still sums to 1.",
        size=(6.0, 4.2), stack="v",
    ),
]  # fmt: skip
