"""Stage 2.4 — generation: greedy, temperature, top-k, top-p, and the KV cache.

Reference solution. Same public API as ``skeleton/generation.py``.

Shapes: B batch, T tokens, V vocabulary, P positions already in the cache, t new positions,
nh heads, hs = d_model / nh (the head size).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from shared.loader import load_dep

_mha = load_dep("1.4")
split_heads = _mha.split_heads  # (B, T, d) -> (B, nh, T, hs)
merge_heads = _mha.merge_heads  # (B, nh, T, hs) -> (B, T, d)
GPT = load_dep("2.2").GPT

__all__ = [
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "next_token_probs",
    "sample_next",
    "crop_context",
    "KVCache",
    "cached_attention",
    "forward_step",
    "next_logits",
    "generate_stream",
    "generate",
]


# ----------------------------------------------------------------------------- Task 1: temperature


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits (..., V) -> logits / temperature (..., V): below 1 sharpens, above 1 flattens.

    Raises ValueError for temperature <= 0 (temperature 0 means greedy: ``sample_next`` handles it).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 here, got {temperature} (temperature 0 is greedy decoding)")
    return logits / temperature


# ----------------------------------------------------------------------------- Task 2: top-k


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the rest to -inf: (..., V) -> (..., V).

    Exactly k survive (all of them when k >= V); the kept logits are unchanged.
    Raises ValueError for k < 1.
    """
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    if k >= logits.size(-1):
        return logits.clone()
    top = torch.topk(logits, k, dim=-1)  # values and indices (..., k)
    out = torch.full_like(logits, float("-inf"))
    return out.scatter(-1, top.indices, top.values)  # (..., V): the k winners back in their places


# ----------------------------------------------------------------------------- Task 3: top-p (nucleus)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass is >= p: (..., V) -> (..., V).

    Tokens are taken in order of decreasing probability; among equal probabilities the lower
    token id comes first (a stable sort). A token is kept when the mass of the tokens before it
    is still < p, so the most likely token always survives. Removed logits become -inf; kept ones
    are unchanged. Raises ValueError unless 0 < p <= 1.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top-p needs 0 < p <= 1, got {p}")
    probs = logits.float().softmax(dim=-1)  # (..., V)
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)  # (..., V) each
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (..., V): mass of the tokens ranked above
    keep_sorted = mass_before < p  # (..., V), in sorted order
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # (..., V), back in token order
    return logits.masked_fill(~keep, float("-inf"))


# ----------------------------------------------------------------------------- Task 4: the distribution, and sampling


def next_token_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The distribution the next token is drawn from: (..., V) logits -> (..., V) probabilities.

    In this order: divide by the temperature, keep the top k, keep the top-p nucleus of what is
    left (measured on the tempered distribution), then softmax (the survivors renormalised).
    """
    logits = apply_temperature(logits.float(), temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits.softmax(dim=-1)


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One next token per row: logits (B, V) -> ids (B,) int64.

    temperature == 0 is greedy decoding (the argmax; the first one on ties). Otherwise one draw
    from ``next_token_probs``, using ``generator`` (so a seeded generator reproduces the draws).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = next_token_probs(logits, temperature, top_k, top_p)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B, 1) -> (B,)


# ----------------------------------------------------------------------------- Task 5: cropping the context


def crop_context(ids: torch.Tensor, block_size: int) -> torch.Tensor:
    """The last ``block_size`` tokens of each row: (B, T) -> (B, min(T, block_size))."""
    return ids if ids.size(1) <= block_size else ids[:, -block_size:]


# ----------------------------------------------------------------------------- Task 6: the cache


class KVCache:
    """The past keys and values of every attention layer of a GPT.

    ``keys[i]`` and ``values[i]`` hold layer i's keys and values, (B, nh, P, hs), or None while
    empty. ``length`` is P, the number of positions cached (the same in every layer).
    """

    def __init__(self, n_layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    @property
    def length(self) -> int:
        """P: how many positions are cached (0 when empty)."""
        k = self.keys[0] if self.keys else None
        return 0 if k is None else k.size(2)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new positions' k, v (B, nh, t, hs) to layer ``layer``; return all of them (B, nh, P + t, hs)."""
        past_k, past_v = self.keys[layer], self.values[layer]
        if past_k is not None and past_v is not None:
            k = torch.cat([past_k, k], dim=2)  # (B, nh, P + t, hs): time is axis 2
            v = torch.cat([past_v, v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def reset(self) -> None:
        """Forget everything (length 0)."""
        self.keys = [None] * len(self.keys)
        self.values = [None] * len(self.values)


# ----------------------------------------------------------------------------- Task 7: one cached forward step


def cached_attention(attn: nn.Module, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
    """Causal self-attention of t new positions over the P cached ones and themselves.

    ``attn`` is a stage 1.4 MultiHeadAttention (q_proj, k_proj, v_proj, out_proj, n_heads, d_head).
    x: (B, t, d_model), the (normalised) inputs at positions P .. P+t-1. Their keys and values are
    appended to ``cache`` (layer ``layer``). New position P+i attends to positions 0 .. P+i.
    Returns (B, t, d_model), equal to the uncached attention's output at those positions.
    """
    t = x.size(1)
    nh = attn.n_heads
    q = split_heads(attn.q_proj(x), nh)  # (B, nh, t, hs)
    k = split_heads(attn.k_proj(x), nh)  # (B, nh, t, hs)
    v = split_heads(attn.v_proj(x), nh)  # (B, nh, t, hs)
    k, v = cache.update(layer, k, v)  # (B, nh, P + t, hs)
    P = k.size(2) - t
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(attn.d_head))  # (B, nh, t, P + t)
    if t > 1:  # query i sits at position P + i: it may not see keys P + i + 1 ...
        future = torch.ones(t, P + t, dtype=torch.bool, device=x.device).triu(P + 1)  # (t, P + t)
        scores = scores.masked_fill(future, float("-inf"))
    weights = scores.softmax(dim=-1)  # (B, nh, t, P + t)
    return attn.out_proj(merge_heads(weights @ v))  # (B, nh, t, hs) -> (B, t, d_model) -> W^O


def forward_step(model: GPT, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Run t new tokens through the GPT, using and extending ``cache``: ids (B, t) -> logits (B, t, V).

    The new tokens sit at absolute positions P .. P+t-1 (P = cache.length), so they get those
    rows of the learned position table. An empty cache and the whole prompt is the "prefill";
    one token is a decoding step. Raises ValueError if P + t > block_size (no position row).
    """
    P, t = cache.length, ids.size(1)
    if P + t > model.config.block_size:
        raise ValueError(f"the cache holds {P} positions; {t} more would pass block_size={model.config.block_size}")
    positions = torch.arange(P, P + t, device=ids.device)  # (t,) absolute positions
    x = model.drop(model.tok_emb(ids) + model.pos_emb.embedding(positions))  # (B, t, d) + (t, d)
    for i, block in enumerate(model.blocks):
        sub = block.attn_sub  # pre-LN: x + dropout(attention(norm(x)))
        x = x + sub.dropout(cached_attention(block.attn, sub.norm(x), cache, i))  # (B, t, d)
        x = block.ff_sub(x, block.ff)  # (B, t, d)
    return model.lm_head(model.ln_f(x))  # (B, t, V)


# ----------------------------------------------------------------------------- Task 8: the next logits, cropped


def next_logits(model: GPT, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
    """The logits for the token after ``ids``: ids (B, T) -> (B, V), what the uncached model gives on
    ``crop_context(ids, block_size)`` at its last position.

    Without a cache: run the model on the cropped context. With one, ``cache`` holds the keys and
    values of ``ids[:, :-1]`` (or nothing, at the start). While T <= block_size, feed only the last
    token (or, when the cache is empty, prefill all of ``ids``). Past block_size the window slides:
    every kept token moves to a new position, so no cached key is valid any more; reset the cache
    and prefill the last block_size tokens.
    """
    block_size = model.config.block_size
    if cache is None:
        logits, _ = model(crop_context(ids, block_size))  # (B, T', V)
        return logits[:, -1]
    T = ids.size(1)
    if cache.length == 0 or T > block_size or cache.length != T - 1:
        cache.reset()
        return forward_step(model, crop_context(ids, block_size), cache)[:, -1]  # prefill (B, V)
    return forward_step(model, ids[:, -1:], cache)[:, -1]  # one step: (B, 1) -> (B, V)


# ----------------------------------------------------------------------------- Task 9: the generation loop


@torch.no_grad()
def generate_stream(
    model: GPT,
    ids: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield the new tokens one step at a time: each is (B,) int64.

    Starts from the prompt ``ids`` (B, T0) and appends what it samples. A row that has produced
    ``eos_id`` is finished: it yields ``eos_id`` from then on. Stops after ``max_new_tokens``
    steps, or as soon as every row is finished (the step that finishes the last row is yielded).
    Call ``model.eval()`` first.
    """
    cache = KVCache(len(model.blocks)) if use_cache else None
    finished = torch.zeros(ids.size(0), dtype=torch.bool, device=ids.device)  # (B,)
    for _ in range(max_new_tokens):
        logits = next_logits(model, ids, cache)  # (B, V)
        token = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)  # (B,)
        if eos_id is not None:
            token = token.masked_fill(finished, eos_id)  # finished rows only repeat eos
            finished = finished | (token == eos_id)
        ids = torch.cat([ids, token[:, None]], dim=1)  # (B, T + 1)
        yield token
        if eos_id is not None and bool(finished.all()):
            return


def generate(
    model: GPT,
    ids: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """The prompt followed by everything ``generate_stream`` yields: (B, T0) -> (B, T0 + n), n <= max_new_tokens."""
    stream = generate_stream(
        model, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        eos_id=eos_id, generator=generator, use_cache=use_cache,
    )  # fmt: skip
    return torch.cat([ids, *(token[:, None] for token in stream)], dim=1)
