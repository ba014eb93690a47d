"""Stage 2.5's worked example: ``nox -s example -- 2.5 [--version solution]`` (the lesson's "A worked example")."""

from __future__ import annotations

import torch

from shared.loader import load, load_dep

ft = load("2.5")  # your skeleton, or the reference with --version solution
gpt = load_dep("2.2")
torch.set_printoptions(precision=3, sci_mode=False, linewidth=120)

tok = load_dep("2.1").BPETokenizer({}, {"<|endoftext|>": 256})  # bytes only: one token per character
prompt_ids, response_ids = ft.encode_chat(tok, "f a", "def f(a):")
print("prompt ids  ", prompt_ids.tolist())
print("response ids", response_ids.tolist())
ids, labels = ft.sft_batch(tok, [("f a", "def f(a):"), ("gg b", "def gg(b):")])
print("input_ids", ids.tolist()[1])
print("labels   ", labels.tolist()[1])
print()

torch.manual_seed(0)
policy = gpt.GPT(gpt.GPTConfig(vocab_size=257, block_size=64, d_model=32, n_layers=1, n_heads=2))
reference = ft.frozen_reference(policy)
triples = [("f a", "def f(a) -> None:", "def f(a):"), ("gg b", "def gg(b) -> None:", "def gg(b):")]
ids, labels = ft.dpo_batch(tok, triples)  # (4, T): chosen, chosen, rejected, rejected
print("log pi(y|x), chosen then rejected:", ft.response_logprobs(policy, ids, labels).detach())
print("preference accuracy at the start:", ft.preference_accuracy(policy, reference, ids, labels))
opt = torch.optim.SGD(policy.parameters(), lr=0.5)
for step in range(1, 13):
    out = ft.dpo_step(policy, reference, opt, ids, labels, beta=0.5)
    if step in (1, 4, 8, 12):
        print(f"step {step:2d}: loss {out['loss']:.4f}  margin {out['margin']:+.4f}  accuracy {out['accuracy']:.2f}")
print("KL(policy || reference) per response:", round(ft.kl_to_reference(policy, reference, ids, labels), 4))
print()

frac = ft.add_lora(policy, r=4, alpha=8.0, targets=("attn",))
print(f"LoRA r=4 on attention: {sum(p.numel() for p in policy.parameters() if p.requires_grad)} trainable parameters,"
      f" {100 * frac:.2f}% of the model")
