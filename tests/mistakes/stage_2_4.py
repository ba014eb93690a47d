from tests.mistakes import Mistake

_SOLUTION_PROBS = """    logits = apply_temperature(logits.float(), temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits.softmax(dim=-1)"""

_MASK = """    if t > 1:  # query i sits at position P + i: it may not see keys P + i + 1 ...
        future = torch.ones(t, P + t, dtype=torch.bool, device=x.device).triu(P + 1)  # (t, P + t)
        scores = scores.masked_fill(future, float("-inf"))
"""

MISTAKES = [
    Mistake(
        "2.4", "temperature multiplied instead of divided",
        "return logits / temperature", "return logits * temperature",
        "multiplied by the temperature instead of dividing",
    ),
    Mistake(
        "2.4", "temperature applied after the softmax",
        _SOLUTION_PROBS,
        _SOLUTION_PROBS.replace("    logits = apply_temperature(logits.float(), temperature)\n", "    logits = logits.float()\n")
        .replace("return logits.softmax(dim=-1)", "return logits.softmax(dim=-1) / temperature"),
        "temperature applied after the softmax",
    ),
    Mistake(
        "2.4", "top-k keeps the smallest logits",
        "top = torch.topk(logits, k, dim=-1)", "top = torch.topk(logits, k, dim=-1, largest=False)",
        "kept the k smallest logits",
    ),
    Mistake(
        "2.4", "top-p keeps one token too few",
        "keep_sorted = mass_before < p", "keep_sorted = sorted_probs.cumsum(dim=-1) < p",
        "top-p keeps one token too few",
    ),
    Mistake(
        "2.4", "top-p keeps one token too many",
        "keep_sorted = mass_before < p",
        "keep_sorted = torch.cat([torch.ones_like(mass_before[..., :1], dtype=torch.bool), (mass_before < p)[..., :-1]], dim=-1)",
        "top-p keeps one token too many",
    ),
    Mistake(
        "2.4", "sampling from logits instead of probabilities",
        "torch.multinomial(probs, num_samples=1, generator=generator)",
        "torch.multinomial(logits, num_samples=1, generator=generator)",
        "sampling from logits instead of probabilities",
    ),
    Mistake(
        "2.4", "context cropped to its first block_size tokens",
        "return ids if ids.size(1) <= block_size else ids[:, -block_size:]",
        "return ids if ids.size(1) <= block_size else ids[:, :block_size]",
        "kept the first block_size tokens instead of the last",
    ),
    Mistake(
        "2.4", "no causal mask in the prefill",
        _MASK, "",
        "no causal mask in the prefill",
    ),
    Mistake(
        "2.4", "causal mask not shifted by the cached positions",
        ".triu(P + 1)  # (t, P + t)", ".triu(1)  # (t, P + t)",
        "the causal mask is not shifted by the cached positions",
    ),
    Mistake(
        "2.4", "cache positions off by one",
        "positions = torch.arange(P, P + t, device=ids.device)",
        "positions = torch.arange(P + 1, P + t + 1, device=ids.device)",
        "cache positions off by one",
    ),
    Mistake(
        "2.4", "every step used learned-position row 0",
        "x = model.drop(model.tok_emb(ids) + model.pos_emb.embedding(positions))",
        "x = model.drop(model.pos_emb(model.tok_emb(ids)))",
        "every step used learned-position row 0",
    ),
    Mistake(
        "2.4", "the cache not cropped past block_size",
        "if cache.length == 0 or T > block_size or cache.length != T - 1:",
        "if cache.length == 0 or cache.length != T - 1:",
        "the cache was not cropped",
    ),
    Mistake(
        "2.4", "the context not cropped (uncached)",
        "logits, _ = model(crop_context(ids, block_size))",
        "logits, _ = model(ids)",
        "the context was not cropped to block_size",
    ),
    Mistake(
        "2.4", "the cache ignored (the whole sequence every step)",
        "    return forward_step(model, ids[:, -1:], cache)[:, -1]",
        "    cache.reset()\n    return forward_step(model, crop_context(ids, block_size), cache)[:, -1]",
        "use_cache is ignored",
    ),
    Mistake(
        "2.4", "finished rows keep generating their own tokens",
        "            token = token.masked_fill(finished, eos_id)  # finished rows only repeat eos\n", "",
        "a finished row kept its own tokens instead of repeating eos_id",
    ),
    Mistake(
        "2.4", "generation does not stop when every row has finished",
        "        if eos_id is not None and bool(finished.all()):\n            return\n", "",
        "kept generating after every row had finished",
    ),
]
