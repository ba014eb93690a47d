"""Stage 2.4's worked example: ``nox -s example -- 2.4 [--version solution]`` (the lesson's "A worked example")."""

from __future__ import annotations

import torch

from shared.loader import load, load_dep

g = load("2.4")  # your skeleton, or the reference with --version solution
gpt = load_dep("2.2")
torch.set_printoptions(precision=3, sci_mode=False)

logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
print("softmax(logits)            ", logits.softmax(-1))
print("T=0.5                      ", g.next_token_probs(logits, 0.5))
print("T=2.0                      ", g.next_token_probs(logits, 2.0))
print("top_k=2                    ", g.next_token_probs(logits, top_k=2))
print("top_p=0.8                  ", g.next_token_probs(logits, top_p=0.8))
print("top_k_filter(k=2)          ", g.top_k_filter(logits, 2))
print("top_p_filter(p=0.8)        ", g.top_p_filter(logits, 0.8))
gen = torch.Generator().manual_seed(0)
draws = g.sample_next(logits.expand(10000, -1), temperature=1.0, top_p=0.8, generator=gen)
print("10000 draws, top_p=0.8     ", torch.bincount(draws, minlength=5) / 10000)
print()

torch.manual_seed(0)
model = gpt.GPT(gpt.GPTConfig(vocab_size=50, block_size=8, d_model=32, n_layers=2, n_heads=4)).eval()
with torch.no_grad():
    for p in model.parameters():
        p.mul_(10)  # larger than GPT-2's init, so the greedy tokens vary
    ids = torch.tensor([[3, 14, 15, 9]])  # (1, 4)
    cache = g.KVCache(len(model.blocks))
    logits = g.forward_step(model, ids, cache)  # the prefill: (1, 4, V)
    print("prefill: cache.length", cache.length, " keys[0]", tuple(cache.keys[0].shape))
    print("max |prefill - model(ids)|", float((logits - model(ids)[0]).abs().max()))
    nxt = torch.tensor([[26]])
    step = g.forward_step(model, nxt, cache)  # one token at position 4: (1, 1, V)
    full = model(torch.cat([ids, nxt], dim=1))[0][:, -1:]
    print("step: cache.length", cache.length, " keys[0]", tuple(cache.keys[0].shape),
          " max |step - model(ids+1)[-1]|", float((step - full).abs().max()))
    print("greedy, cached  ", g.generate(model, ids, 12, temperature=0.0, use_cache=True).tolist())
    print("greedy, uncached", g.generate(model, ids, 12, temperature=0.0, use_cache=False).tolist())
