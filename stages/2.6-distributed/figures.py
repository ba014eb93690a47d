"""Stage 2.6's pictures (``nox -s show -- 2.6``): which rank trains on which window, epoch by epoch.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
Only ``shard_indices`` is called: no process group is needed to draw it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from shared.figures import Figure

N, WORLD, EPOCHS = 24, 3, 3


def shards_data(m: ModuleType) -> dict[str, Any]:
    """owner[e, i]: the rank that trains on window i in epoch e (-1: nobody, >= WORLD: more than one)."""
    owner = np.full((EPOCHS, N), -1)
    order = np.zeros((EPOCHS, N), dtype=int)  # when in its shard the rank reaches window i
    for e in range(EPOCHS):
        for r in range(WORLD):
            for k, i in enumerate(m.shard_indices(N, r, WORLD, e)):
                owner[e, int(i)] = r if owner[e, int(i)] == -1 else WORLD  # WORLD marks a window two ranks share
                order[e, int(i)] = k
    return {"owner": owner, "order": order, "world": WORLD}


def draw_shards(panel: Any, data: dict[str, Any]) -> None:
    from matplotlib.colors import ListedColormap

    ax = panel.subplots()
    owner, order, world = data["owner"], data["order"], data["world"]
    colours = ["#dddddd", "#4c72b0", "#dd8452", "#55a868", "#c44e52"][: world + 2]  # nobody, ranks, shared
    ax.imshow(owner + 1, cmap=ListedColormap(colours), vmin=0, vmax=world + 1, aspect="auto")
    for (e, i), k in np.ndenumerate(order):
        if owner[e, i] >= 0:
            ax.text(i, e, str(k), ha="center", va="center", fontsize=6, color="white")
    ax.set_yticks(range(owner.shape[0]), [f"epoch {e}" for e in range(owner.shape[0])], fontsize=7)
    ax.set_xticks(range(0, owner.shape[1], 4))
    ax.tick_params(labelsize=7)
    ax.set_xlabel("training window (colour: its rank; number: its place in that rank's order)", fontsize=7)
    handles = [ax.bar(0, 0, color=colours[r + 1], label=f"rank {r}") for r in range(world)]
    ax.legend(handles=handles, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=world)


FIGURES: list[Figure] = [
    Figure(
        "shards", "Sharding: disjoint, covering, reshuffled each epoch", shards_data, draw_shards,
        caption="Every window has exactly one rank in every epoch (no grey, no red), and set_epoch deals them out afresh.",
        size=(6.4, 2.2), stack="v",
    ),
]  # fmt: skip
