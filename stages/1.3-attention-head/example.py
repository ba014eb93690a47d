"""Stage 1.3's worked example: ``nox -s example -- 1.3 [--version solution]`` (four tokens, d_head = 2)."""

from __future__ import annotations

import math

import torch

from grader.example import side_by_side
from shared.loader import load

head = load("1.3")  # your skeleton, or the reference with --version solution


def rows(t: torch.Tensor, fmt: str = "{:.4f}") -> str:
    """A 2-D tensor as a nested list, one row per line: [[1.0000, 0.0000],\\n [0.3302, 0.6698]]."""
    lines = ["[" + ", ".join(fmt.format(v) for v in row) + "]" for row in t.tolist()]
    return "[" + ",\n ".join(lines) + "]"


q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])  # (T=4, d_head=2)
k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
print("q = [[1, 0], [0, 1], [1, 1], [0, 0]]")
print("k = [[1, 0], [0, 1], [1, 1], [-1, 0]]")
print("v = [[1, 0], [0, 1], [1, 1], [2, 2]]")
print()

causal = head.causal_mask(4)  # (4, 4), True = blocked
scores = q @ k.T / math.sqrt(2)  # (4, 4)
print(side_by_side(f"causal_mask(4)\n{rows(causal.int(), '{}')}", f"scores = q kᵀ / √2\n{rows(scores, '{: .4f}')}", gap=15))
print()

out, weights = head.attention(q, k, v, mask=causal)
notes = "\n".join(["", "token 0 sees only itself: out = v[0]", "", "", "q = 0: equal scores, uniform weights"])
print(side_by_side(f"weights\n{rows(weights)}", f"out\n{rows(out)}", notes, gap=8))
print()

pad = torch.tensor([True, False, False, False])  # token 0 is padding
mask = causal | pad[None, :]  # (4, 4): query 0 sees nothing at all
out, weights = head.attention(q, k, v, mask=mask)
print(side_by_side(f"mask\n{rows(mask.int(), '{}')}", f"weights\n{rows(weights)}", f"out\n{rows(out)}",
                   "\n<- defined as zeros", gap=7))  # fmt: skip
