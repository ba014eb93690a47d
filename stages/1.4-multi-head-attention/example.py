"""Stage 1.4's worked example: ``nox -s example -- 1.4 [--version solution]`` (MultiHeadAttention(8, 2) on (1, 3, 8))."""

from __future__ import annotations

import torch

from grader.example import side_by_side
from shared.loader import load

mh = load("1.4")  # your skeleton, or the reference with --version solution
torch.manual_seed(0)


def shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def ints(t: torch.Tensor) -> str:
    """A 2-D tensor of integers as a nested list, one row per line, each number two wide."""
    lines = ["[" + ", ".join(f"{v:2d}" for v in row) + "]" for row in t.tolist()]
    return "[" + ",\n ".join(lines) + "]"


mha = mh.MultiHeadAttention(d_model=8, n_heads=2).eval()
x = torch.randn(1, 3, 8)  # (B, T, d_model)
memory = torch.randn(1, 5, 8)  # (B, S, d_model): what cross-attention reads
q = mha.q_proj(x)
heads = mh.split_heads(q, 2)  # (B, h, T, d_head)
with torch.no_grad():
    out, w = mha(x, need_weights=True, average_attn_weights=False)
    out_x, w_x = mha(x, memory, need_weights=True)
ref = torch.nn.MultiheadAttention(8, 2)
print(f"{'x':<22}{shape(x):<16}(B, T, d_model)")
print(f"{'q_proj(x)':<22}{shape(q)}")
print(f"{'split_heads(q, 2)':<22}{shape(heads):<16}(B, h, T, d_head)")
print(f"{'merge_heads(...)':<22}{shape(mh.merge_heads(heads)):<16}back to (B, T, d_model)")
print(f"mha(x, need_weights=True, average_attn_weights=False)  ->  out {shape(out)}, weights {shape(w)}")
print(f"mha(x, memory {shape(memory)}, need_weights=True)            ->  out {shape(out_x)}, weights {shape(w_x)}")
print(f"parameters: {sum(p.numel() for p in mha.parameters())}, torch.nn.MultiheadAttention(8, 2):"
      f" {sum(p.numel() for p in ref.parameters())}")  # fmt: skip
print()

x = torch.arange(24).reshape(1, 3, 8)  # the features of each token: 0...23
split = mh.split_heads(x, 2)[0]  # (h=2, T=3, d_head=4)
heads = side_by_side(f"head 0: {ints(split[0])}".replace("\n", "\n        "), f"head 1: {ints(split[1])}".replace("\n", "\n        "))
print(side_by_side(f"x[0]  (T=3, d_model=8)\n{ints(x[0])}", f"split_heads(x, 2)[0]  (h=2, T=3, d_head=4)\n{heads}"))
print()

wrong = x.reshape(1, 2, 3, 4)[0]  # the tempting one-liner: (h, T, d_head) without the transpose
print(side_by_side(f"head 0: {ints(wrong[0])}".replace("\n", "\n        "), f"head 1: {ints(wrong[1])}".replace("\n", "\n        ")))
