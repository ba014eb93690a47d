"""Stage 1.2's pictures (``nox -s show -- 1.2``): the worked example's scores and weights, with and without the mask.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
The scores are computed here from the lesson's X, W_q, W_k (they are not one of your functions);
the weights are your ``self_attention``'s, with your ``causal_mask``.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from shared.figures import Figure, heatmap

# The lesson's worked example: 3 tokens, d_model = d_k = d_v = 4.
X = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]], dtype=np.float64)  # (T=3, d_model=4)
W_Q = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 1, 0]], dtype=np.float64)  # (4, d_k)
W_K = np.array([[0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=np.float64)  # (4, d_k)
W_V = np.array([[1, 0, 2, 0], [0, 1, 0, 2], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=np.float64)  # (4, d_v)
TOKENS = ["tok 0", "tok 1", "tok 2"]


def example_data(m: ModuleType) -> dict[str, Any]:
    """Scaled scores (3, 3) and your weights (3, 3), without and with your causal mask."""
    scores = (X @ W_Q) @ (X @ W_K).T / math.sqrt(W_Q.shape[1])  # (T, T)
    mask = np.asarray(m.causal_mask(3), dtype=bool)  # (T, T) True = blocked
    _, weights = m.self_attention(X, W_Q, W_K, W_V)
    _, causal_weights = m.self_attention(X, W_Q, W_K, W_V, mask=mask)
    return {
        "scores": scores,
        "weights": np.asarray(weights, dtype=np.float64),  # (T, T)
        "masked_scores": np.where(mask, -np.inf, scores),  # (T, T)
        "causal_weights": np.asarray(causal_weights, dtype=np.float64),  # (T, T)
    }


def draw_example(panel: Any, data: dict[str, Any]) -> None:
    axes = panel.subplots(2, 2)
    common = {"annotate": True, "xticks": TOKENS, "yticks": TOKENS}
    heatmap(axes[0, 0], data["scores"], title="scores  Q Kᵀ / √d_k", cmap="Blues", fmt="{:.1f}", **common)
    heatmap(axes[0, 1], data["weights"], title="weights = softmax(rows)", cmap="Greens", vmin=0, vmax=1,
            fmt="{:.3f}", **common)  # fmt: skip
    heatmap(axes[1, 0], data["masked_scores"], title="causal: masked scores", cmap="Blues", fmt="{:.1f}", **common)
    heatmap(axes[1, 1], data["causal_weights"], title="causal: weights", cmap="Greens", vmin=0, vmax=1,
            fmt="{:.3f}", **common)  # fmt: skip
    for ax in axes[:, 0]:
        ax.set_ylabel("query", fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("key", fontsize=8)


FIGURES: list[Figure] = [
    Figure(
        "worked-example", "The worked example: scores and weights", example_data, draw_example,
        caption="Each row of weights sums to 1; with the causal mask, token 0 sees only itself and row 2 is unchanged.",
        size=(4.6, 4.2),
    ),
]  # fmt: skip
