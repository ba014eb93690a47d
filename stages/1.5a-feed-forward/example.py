"""Stage 1.5a's worked example: ``nox -s example -- 1.5a [--version solution]`` (GELU and the feed-forward network)."""

from __future__ import annotations

import torch

from grader.example import shell
from shared.loader import load

ff = load("1.5a")  # your skeleton, or the reference with --version solution
torch.set_printoptions(precision=4)

x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
print(f"{'x':<13}{x}")
print(f"{'gelu':<13}{ff.gelu(x)}")
print(f"{'gelu tanh':<13}{ff.gelu(x, approximate='tanh')}")
print(f"{'relu':<13}{torch.relu(x)}")
grid = torch.linspace(-8, 8, 2001)  # steps of 0.008
print(f"exact-tanh max |diff| on [-8,8]: {(ff.gelu(grid) - ff.gelu(grid, approximate='tanh')).abs().max().item()}")
print()

shell("FeedForward(d_model=8)", {"FeedForward": ff.FeedForward})
n = sum(p.numel() for p in ff.FeedForward(d_model=8).parameters())
print(f"params {n} = 2*8*32 + 32 + 8 = {2 * 8 * 32 + 32 + 8}")
