"""Stage 2.4's pictures (``nox -s show -- 2.4``): what each sampling filter keeps, and the KV cache's work.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import torch

from shared.figures import Figure, to_numpy
from shared.loader import load_dep

LOGITS = [2.2, 1.6, 1.1, 0.9, 0.5, 0.2, -0.1, -0.6, -1.0, -1.5]  # one row, 10 tokens, already sorted
SETTINGS = [  # (label, temperature, top_k, top_p)
    ("softmax (T = 1)", 1.0, None, None), ("T = 0.5", 0.5, None, None), ("T = 2", 2.0, None, None),
    ("top-k, k = 3", 1.0, 3, None), ("top-p, p = 0.8", 1.0, None, 0.8), ("T 0.7, k 5, p 0.9", 0.7, 5, 0.9),
]  # fmt: skip

ROUNDING = 1e-6  # float32 logits of size ~1 agree to this when the cache is right


def filters_data(m: ModuleType) -> dict[str, Any]:
    """next_token_probs of one row of logits under each setting: (settings, V)."""
    logits = torch.tensor([LOGITS])
    probs = np.stack([to_numpy(m.next_token_probs(logits, T, k, p))[0] for _, T, k, p in SETTINGS])
    return {"labels": [s[0] for s in SETTINGS], "probs": probs}


def draw_filters(panel: Any, data: dict[str, Any]) -> None:
    axes = panel.subplots(2, 3, sharex=True, sharey=True)
    V = data["probs"].shape[1]
    for ax, label, row in zip(axes.flat, data["labels"], data["probs"], strict=True):
        kept = row > 0
        ax.bar(np.arange(V), row, color=np.where(kept, "tab:blue", "lightgrey"))
        ax.set_xticks(range(0, V, 3))
        ax.set_title(f"{label}: {int(kept.sum())} kept", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3, axis="y")
    for ax in axes[1]:
        ax.set_xlabel("token (most likely first)", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("probability", fontsize=7)


def cache_data(m: ModuleType) -> dict[str, Any]:
    """Greedy generation on a tiny random GPT (block_size 16): per step, the tokens each path runs through the
    first attention layer, and the largest |cached - uncached| logit."""
    gpt = load_dep("2.2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = gpt.GPT(gpt.GPTConfig(vocab_size=64, block_size=16, d_model=32, n_layers=2, n_heads=4)).eval()
        ids = torch.randint(0, 64, (1, 4))
    fed: dict[bool, list[int]] = {True: [], False: []}
    logits: dict[bool, list[torch.Tensor]] = {True: [], False: []}
    for use_cache in (True, False):
        hook = model.blocks[0].attn.q_proj.register_forward_hook(
            lambda mod, inp, out, u=use_cache: fed[u].append(int(inp[0].size(1)))
        )
        try:
            with torch.no_grad():
                x, cache = ids, (m.KVCache(len(model.blocks)) if use_cache else None)
                for _ in range(24):  # past block_size: the cache is rebuilt there
                    out = m.next_logits(model, x, cache)  # (1, V)
                    logits[use_cache].append(out[0])
                    x = torch.cat([x, out.argmax(-1, keepdim=True)], dim=1)
        finally:
            hook.remove()
    diff = (torch.stack(logits[True]) - torch.stack(logits[False])).abs().amax(dim=-1)  # (steps,)
    # Below ROUNDING the difference is float32 rounding, which differs between CPUs and thread counts:
    # floored there, so that the picture (and its data hash) shows agreement, not the machine's noise.
    diff = diff.clamp_min(ROUNDING)
    return {"cached": np.array(fed[True]), "uncached": np.array(fed[False]), "diff": to_numpy(diff), "block_size": 16,
            "prompt": 4}  # fmt: skip


def draw_cache(panel: Any, data: dict[str, Any]) -> None:
    ax1, ax2 = panel.subplots(1, 2)
    steps = np.arange(len(data["cached"]))
    length = data["prompt"] + steps  # the sequence length at each step
    ax1.step(length, data["uncached"], where="mid", label="no cache")
    ax1.step(length, data["cached"], where="mid", label="KV cache")
    ax1.axvline(data["block_size"], color="grey", ls=":", lw=1)
    ax1.set_xlabel("sequence length", fontsize=7)
    ax1.set_ylabel("tokens through the model", fontsize=7)
    ax1.legend(fontsize=6)
    ax2.semilogy(length, data["diff"], "o", ms=3)
    ax2.axhline(ROUNDING, color="0.7", lw=0.8, ls="--")
    ax2.text(length[0], ROUNDING * 1.6, "float32 rounding (floor)", fontsize=6)
    ax2.axvline(data["block_size"], color="grey", ls=":", lw=1)
    ax2.set_ylim(ROUNDING / 10, 1)
    ax2.set_xlabel("sequence length", fontsize=7)
    ax2.set_ylabel("max |cached - uncached| logit", fontsize=7)
    for ax in (ax1, ax2):
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)


FIGURES: list[Figure] = [
    Figure(
        "sampling-filters", "What temperature, top-k and top-p leave to sample from", filters_data, draw_filters,
        caption="Temperature reshapes every bar; top-k keeps a fixed count; top-p keeps the fewest tokens whose mass reaches p.",
        size=(5.2, 3.2), stack="v",
    ),
    Figure(
        "kv-cache-work", "The KV cache: one token per step, the same logits", cache_data, draw_cache,
        caption="With the cache each step feeds one token until the sequence passes block_size (dotted), where it is rebuilt; the logits agree to float rounding.",
        size=(5.2, 2.4), stack="v",
    ),
]  # fmt: skip
