"""Stage 1.5b's worked example: ``nox -s example -- 1.5b [--version solution]`` (LayerNorm on three tokens).

The lesson's experiment (pre-LN vs post-LN in a deep stack) is the stage file's own demo:
``python stages/1.5b-residual-layernorm/skeleton/layer_norm.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shared.loader import load

ln = load("1.5b")  # your skeleton, or the reference with --version solution
torch.set_printoptions(precision=4)

x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0], [5.0, 5.0, 5.0, 5.0]])  # (T=3, d=4)
print(f"x = {x}")
print(f"mean {x.mean(-1)} biased var {x.var(-1, unbiased=False)} unbiased var {x.var(-1)}")
print(f"LayerNorm(4)(x) = {ln.LayerNorm(4)(x).detach()}")
print(f"torch.nn.LayerNorm(4)(x) = {torch.nn.LayerNorm(4)(x).detach()}")
unbiased = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + 1e-5)
print(f"with unbiased var = {unbiased}")

torch.manual_seed(0)
far = torch.randn(16) + 1e4  # one token far from 0, in float32
err = (ln.LayerNorm(16)(far).detach().double() - F.layer_norm(far.double(), (16,))).abs().max().item()
one_pass = ((far * far).mean() - far.mean() ** 2).item()
print(f"offset 1e4: two-pass max err {err}  E[x^2]-E[x]^2 variance = {one_pass}  true {far.double().var(unbiased=False).item()}")
