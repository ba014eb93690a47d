"""Stage 1.1's worked example: ``nox -s example -- 1.1 [--version solution]`` (the lesson's "A worked example")."""

from __future__ import annotations

import torch

from shared.loader import load

torch.set_printoptions(precision=4, sci_mode=False)
pe = load("1.1")  # your skeleton, or the reference with --version solution

print(pe.sinusoidal_table(6, 8))

print()
table = pe.sinusoidal_table(64, 16)  # (64, 16)
for k in (1, 3, 7):
    dots = (table[:-k] * table[k:]).sum(dim=-1)  # PE(p) . PE(p + k) for every p: (64 - k,)
    print(f"k = {k}: min {dots.min().item():.4f}  max {dots.max().item():.4f}")
