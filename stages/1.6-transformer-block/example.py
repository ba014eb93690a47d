"""Stage 1.6's worked example: ``nox -s example -- 1.6 [--version solution]``.

First the lesson's "A worked example" (a small model with random weights), then its "Provided:
watch it learn" demo: train_reverse, exact_match and greedy_decode on the reversal task.
"""

from __future__ import annotations

import torch

from shared.loader import load

tf = load("1.6")  # your skeleton, or the reference with --version solution
torch.manual_seed(0)
cfg = tf.TransformerConfig(
    src_vocab_size=10,
    tgt_vocab_size=10,
    d_model=16,
    n_heads=2,
    n_encoder_layers=2,
    n_decoder_layers=2,
    d_ff=32,
    dropout=0.0,
)
model = tf.Transformer(cfg).eval()

src = torch.tensor([[3, 4, 5, 6, 0], [7, 8, 9, 0, 0]])  # 0 = PAD
src_pad = src == 0  # True = padding = blocked
tgt = torch.tensor([[1, 6, 5], [1, 9, 8]])  # 1 = BOS, then the answer so far
with torch.no_grad():
    memory = model.encode(src, src_key_padding_mask=src_pad)
    logits = model(src, tgt, src_key_padding_mask=src_pad)
print("memory", tuple(memory.shape), " logits", tuple(logits.shape))
probs = logits.softmax(dim=-1)
print("P(next token | BOS), row 0:", [round(p, 3) for p in probs[0, 0].tolist()])
print("sums to", round(probs[0, 0].sum().item(), 6))

tgt2 = tgt.clone()
tgt2[:, 2] = 4  # change the LAST target token only
with torch.no_grad():
    logits2 = model(src, tgt2, src_key_padding_mask=src_pad)
print("largest change per position:", (logits2 - logits).abs().amax(dim=(0, 2)).tolist())
print("parameters:", sum(p.numel() for p in model.parameters()))

print()
model, test = tf.train_reverse(log_every=50)
print(f"held-out exact match: {tf.exact_match(model, test, test.flip(1)):.1%}")
out = tf.greedy_decode(model, test[:4], max_len=test.size(1) + 2, bos_id=tf.BOS, eos_id=tf.EOS)
for s, o in zip(test[:4].tolist(), out.tolist(), strict=True):
    print(f"{s} -> {o}")
