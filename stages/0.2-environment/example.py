"""Stage 0.2's worked example: ``nox -s example -- 0.2 [--version solution]``.

The device, the autocast dtype and the GradScaler this machine gets, five mixed-precision steps of
a small regression model, then matmul throughput. The lesson shows the course CI machine's run
(2 shared CPU cores): the first block is the same on any CPU-only machine; the throughput is yours.
"""

from __future__ import annotations

import torch
from torch import nn

from shared.loader import load

env = load("0.2")  # your skeleton, or the reference with --version solution

device = env.pick_device()
dtype = env.autocast_dtype(device)
print(f"device: {device} | autocast dtype: {dtype}")
print(f"scaler enabled: {env.make_grad_scaler(device, dtype).is_enabled()} | for fp16:"
      f" {env.make_grad_scaler(device, torch.float16).is_enabled()}")  # fmt: skip

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 1)).to(device)
x = torch.randn(256, 16)  # (B, d_in)
y = 3 * x.sum(dim=-1, keepdim=True) + 1  # (B, 1): a linear target with variance 144
opt = torch.optim.SGD(model.parameters(), lr=0.05)
scaler = env.make_grad_scaler(device, dtype)
for step in range(5):
    loss = env.amp_train_step(model, (x, y), opt, scaler, device, dtype, max_grad_norm=5.0)
    print(f"step {step}: loss {loss:.3f}")

print()
for n, dt in ((256, torch.float32), (1024, torch.float32), (1024, dtype)):
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dt]
    print(f"matmul {n}x{n} {name}: {env.matmul_tflops(n, device, dt):.3f} TFLOP/s")
