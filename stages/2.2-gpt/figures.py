"""Stage 2.2's pictures (``nox -s show -- 2.2``): the residual stream at initialisation, and causality.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
import torch

from shared.figures import Figure, heatmap, to_numpy

N_LAYERS, D, V, T = 24, 64, 256, 32


def _stream_stds(model: Any, ids: torch.Tensor) -> list[float]:
    """The std of the residual stream after the embeddings and after every block (ln_f not applied)."""
    with torch.no_grad():
        x = model.drop(model.pos_emb(model.tok_emb(ids)))  # (B, T, d)
        stds = [float(x.std())]
        for block in model.blocks:
            x = block(x)  # (B, T, d)
            stds.append(float(x.std()))
    return stds


def stream_data(m: ModuleType) -> dict[str, Any]:
    """Your GPT with your init_weights, then the same model with the residual projections at std 0.02."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = m.GPTConfig(vocab_size=V, block_size=T, d_model=D, n_layers=N_LAYERS, n_heads=4)
        model = m.GPT(cfg).eval()
        ids = torch.randint(0, V, (4, T))
        scaled = _stream_stds(model, ids)
        with torch.no_grad():  # given machinery: the same weights, but residual projections not scaled down
            for block in model.blocks:
                block.attn.out_proj.weight.normal_(0.0, 0.02)
                block.ff.linear2.weight.normal_(0.0, 0.02)
        unscaled = _stream_stds(model, ids)
    return {"layers": list(range(N_LAYERS + 1)), "scaled": np.array(scaled), "unscaled": np.array(unscaled)}


def draw_stream(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    ax.plot(data["layers"], data["unscaled"], "s--", ms=3, lw=1.2, label="residual projections std 0.02")
    ax.plot(data["layers"], data["scaled"], "o-", ms=3, lw=1.4, label=f"std 0.02/sqrt(2·{N_LAYERS}) (GPT-2)")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("after block (0 = embeddings)", fontsize=8)
    ax.set_ylabel("std of the residual stream", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def causality_data(m: ModuleType) -> dict[str, Any]:
    """How much the logits at each position move when one input token changes (largest |change|)."""
    n = 10
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = m.GPT(m.GPTConfig(vocab_size=V, block_size=n, d_model=D, n_layers=2, n_heads=4)).eval()
        ids = torch.randint(0, V, (1, n))
        with torch.no_grad():
            base = model(ids)[0][0]  # (n, V)
            effect = torch.zeros(n, n)  # (changed input position, output position)
            for j in range(n):
                ids2 = ids.clone()
                ids2[0, j] = (ids2[0, j] + 1) % V
                effect[j] = (model(ids2)[0][0] - base).abs().amax(dim=-1)  # (n,)
    return {"effect": to_numpy(effect.T)}  # (output position, changed input position)


def draw_causality(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    effect = data["effect"]
    heatmap(ax, np.log10(effect + 1e-12), xlabel="changed input token", ylabel="logits at position",
            cmap="magma", vmin=-12, vmax=math.log10(max(float(effect.max()), 1e-12)), colorbar=True)  # fmt: skip
    ax.set_title("log10 largest change of the logits", fontsize=8)


FIGURES: list[Figure] = [
    Figure(
        "residual-stream", "The residual stream at initialisation, 24 blocks", stream_data, draw_stream,
        caption="With the residual projections scaled by 1/sqrt(2·n_layers) the stream stays near its starting size;"
        " without, it grows block after block.",
        size=(4.2, 3.0),
    ),
    Figure(
        "causality", "What each position's logits depend on", causality_data, draw_causality,
        caption="Changing input token j moves the logits at positions j and after only: the upper triangle is"
        " exactly zero (dark).",
        size=(4.0, 3.4), digits=2,
    ),
]  # fmt: skip
