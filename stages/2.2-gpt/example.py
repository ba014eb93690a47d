"""Stage 2.2's worked example: ``nox -s example -- 2.2 [--version solution]`` (the lesson's "A worked example")."""

from __future__ import annotations

import math

import torch

from shared.loader import load

gpt = load("2.2")  # your skeleton, or the reference with --version solution
torch.manual_seed(0)
cfg = gpt.GPTConfig(vocab_size=1024, block_size=128, d_model=128, n_layers=4, n_heads=4)
model = gpt.GPT(cfg).eval()
print("parameters:", model.num_params(), " without embeddings:", model.num_params(non_embedding=True))
print("head tied:", model.lm_head.weight is model.tok_emb.weight)

ids = torch.randint(0, 1024, (2, 16))  # (B, T)
targets = torch.roll(ids, -1, dims=1)  # (B, T): the next token at each position (a toy target)
with torch.no_grad():
    logits, loss = model(ids, targets)
print("logits", tuple(logits.shape), f" loss {loss.item():.4f}  ln(V) = {math.log(1024):.4f}")
print("logit std at init:", round(logits.std().item(), 4))

ids2 = ids.clone()
ids2[:, 10] = (ids2[:, 10] + 1) % 1024  # change token 10 only
with torch.no_grad():
    logits2, _ = model(ids2)
print("largest change at positions 0-9:", (logits2 - logits)[:, :10].abs().max().item())
print("largest change at position 10:  ", round((logits2 - logits)[:, 10].abs().max().item(), 4))
print(
    "out_proj std:",
    round(model.blocks[0].attn.out_proj.weight.std().item(), 5),
    " q_proj std:",
    round(model.blocks[0].attn.q_proj.weight.std().item(), 5),
)
