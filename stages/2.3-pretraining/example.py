"""Stage 2.3's worked example: ``nox -s example -- 2.3 [--version solution]`` (the lesson's "A worked example")."""

from __future__ import annotations

import numpy as np
import torch

from shared.loader import load, load_dep

pre = load("2.3")  # your skeleton, or the reference with --version solution

data = np.arange(100, 120, dtype=np.uint16)  # the "next token" of v is v + 1
x, y = pre.get_batch(data, 2, 6, "cpu", torch.Generator().manual_seed(0))
print("x =", x.tolist())
print("y =", y.tolist())
print()
print(" ".join(f"{s}:{pre.lr_at(s, 1e-3, 1e-4, 4, 20):.2e}" for s in (0, 1, 2, 3, 4, 5, 10, 15, 20, 25)))
print()
gpt = load_dep("2.2")
torch.manual_seed(0)
model = gpt.GPT(gpt.GPTConfig(vocab_size=1024, block_size=128, d_model=128, n_layers=4, n_heads=4))
names = {id(p): n for n, p in model.named_parameters()}
for group in pre.param_groups(model, 0.1):
    ps = group["params"]
    print(f"weight_decay={group['weight_decay']}: {len(ps)} tensors, {sum(p.numel() for p in ps):,} parameters,"
          f" e.g. {[names[id(p)] for p in ps[:3]]}")
print()
lin = torch.nn.Linear(3, 2)
lin.weight.grad = torch.tensor([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
lin.bias.grad = torch.tensor([0.0, 12.0])
total = pre.clip_grad_norm(lin.parameters(), 1.0)
w = [[round(v, 4) for v in row] for row in lin.weight.grad.tolist()]
print(f"total norm {float(total):.4f}; clipped weight grad {w}, bias grad {[round(v, 4) for v in lin.bias.grad.tolist()]}")
