"""Stage 2.4 — generation: greedy, temperature, top-k, top-p, and the KV cache.

Your tasks (the lesson, README.md, walks through each one):
  Task 1  apply_temperature   logits / T
  Task 2  top_k_filter        keep the k largest logits
  Task 3  top_p_filter        keep the smallest most-likely set with mass >= p (the nucleus)
  Task 4  next_token_probs    temperature -> top-k -> top-p -> softmax;  sample_next: greedy or one draw
  Task 5  crop_context        the last block_size tokens
  Task 6  KVCache             each attention layer's past keys and values
  Task 7  cached_attention    new positions attend over the cache;  forward_step: the GPT, one step
  Task 8  next_logits         the next token's logits, with or without the cache, past block_size too
  Task 9  generate_stream     the generation loop, stopping at end-of-text;  generate: all of it at once

Shapes: B batch, T tokens, V vocabulary, P positions already in the cache, t new positions,
nh heads, hs = d_model / nh (the head size).

Grade your work with:  nox -s grade -- 2.4
"""

from __future__ import annotations

import math  # noqa: F401  (you will want math.sqrt)
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
    # TODO(Task 1): check the temperature, then divide. Temperature works on logits, before the softmax.
    raise NotImplementedError("Task 1: apply_temperature")


# ----------------------------------------------------------------------------- Task 2: top-k


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the rest to -inf: (..., V) -> (..., V).

    Exactly k survive (all of them when k >= V); the kept logits are unchanged.
    Raises ValueError for k < 1.
    """
    # TODO(Task 2): torch.topk gives the k largest values and their indices; put them back into a
    #   row full of -inf (Tensor.scatter), or mask everything below the k-th value.
    raise NotImplementedError("Task 2: top_k_filter")


# ----------------------------------------------------------------------------- Task 3: top-p (nucleus)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass is >= p: (..., V) -> (..., V).

    Tokens are taken in order of decreasing probability; among equal probabilities the lower
    token id comes first (a stable sort). A token is kept when the mass of the tokens before it
    is still < p, so the most likely token always survives. Removed logits become -inf; kept ones
    are unchanged. Raises ValueError unless 0 < p <= 1.
    """
    # TODO(Task 3): softmax, sort descending with stable=True, and for each sorted token the mass of
    #   the tokens *before* it (cumsum minus itself); keep it while that is < p. Scatter the keep mask
    #   back to token order and fill the rest with -inf.
    raise NotImplementedError("Task 3: top_p_filter")


# ----------------------------------------------------------------------------- Task 4: the distribution, and sampling


def next_token_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The distribution the next token is drawn from: (..., V) logits -> (..., V) probabilities.

    In this order: divide by the temperature, keep the top k, keep the top-p nucleus of what is
    left (measured on the tempered distribution), then softmax (the survivors renormalised).
    """
    # TODO(Task 4): Tasks 1-3 in that order (skip a filter that is None), then the softmax.
    raise NotImplementedError("Task 4: next_token_probs")


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
    # TODO(Task 4): greedy when temperature == 0; otherwise torch.multinomial on the *probabilities*,
    #   with generator=generator.  # (B, 1) -> (B,)
    raise NotImplementedError("Task 4: sample_next")


# ----------------------------------------------------------------------------- Task 5: cropping the context


def crop_context(ids: torch.Tensor, block_size: int) -> torch.Tensor:
    """The last ``block_size`` tokens of each row: (B, T) -> (B, min(T, block_size))."""
    # TODO(Task 5)
    raise NotImplementedError("Task 5: crop_context")


# ----------------------------------------------------------------------------- Task 6: the cache


class KVCache:
    """The past keys and values of every attention layer of a GPT.

    ``keys[i]`` and ``values[i]`` hold layer i's keys and values, (B, nh, P, hs), or None while
    empty. ``length`` is P, the number of positions cached (the same in every layer).
    """

    def __init__(self, n_layers: int) -> None:
        # TODO(Task 6): self.keys and self.values, one entry (None for now) per layer.
        raise NotImplementedError("Task 6: KVCache")

    @property
    def length(self) -> int:
        """P: how many positions are cached (0 when empty)."""
        # TODO(Task 6): the time axis (dim 2) of the cached keys.
        raise NotImplementedError("Task 6: KVCache.length")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new positions' k, v (B, nh, t, hs) to layer ``layer``; return all of them (B, nh, P + t, hs)."""
        # TODO(Task 6): torch.cat along the time axis; store and return the result.
        raise NotImplementedError("Task 6: KVCache.update")

    def reset(self) -> None:
        """Forget everything (length 0)."""
        # TODO(Task 6)
        raise NotImplementedError("Task 6: KVCache.reset")


# ----------------------------------------------------------------------------- Task 7: one cached forward step


def cached_attention(attn: nn.Module, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
    """Causal self-attention of t new positions over the P cached ones and themselves.

    ``attn`` is a stage 1.4 MultiHeadAttention (q_proj, k_proj, v_proj, out_proj, n_heads, d_head).
    x: (B, t, d_model), the (normalised) inputs at positions P .. P+t-1. Their keys and values are
    appended to ``cache`` (layer ``layer``). New position P+i attends to positions 0 .. P+i.
    Returns (B, t, d_model), equal to the uncached attention's output at those positions.
    """
    # TODO(Task 7): q, k, v from the projections, split into heads (B, nh, t, hs); append k, v to the
    #   cache (B, nh, P + t, hs); scores scaled by 1/sqrt(hs) (B, nh, t, P + t); when t > 1, block key j
    #   for new query i when j > P + i; softmax over the keys; weights @ v; merge heads; out_proj.
    raise NotImplementedError("Task 7: cached_attention")


def forward_step(model: GPT, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Run t new tokens through the GPT, using and extending ``cache``: ids (B, t) -> logits (B, t, V).

    The new tokens sit at absolute positions P .. P+t-1 (P = cache.length), so they get those
    rows of the learned position table. An empty cache and the whole prompt is the "prefill";
    one token is a decoding step. Raises ValueError if P + t > block_size (no position row).
    """
    # TODO(Task 7): tok_emb(ids) + pos_emb.embedding(positions P .. P+t-1) (not pos_emb(x): that restarts
    #   at row 0), drop; then per block i (pre-LN, as Block.forward does):
    #   x = x + block.attn_sub.dropout(cached_attention(block.attn, block.attn_sub.norm(x), cache, i));
    #   x = block.ff_sub(x, block.ff); finally ln_f and lm_head.
    raise NotImplementedError("Task 7: forward_step")


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
    # TODO(Task 8): the three cases: no cache; prefill (empty cache, or past block_size: reset first);
    #   one step (feed ids[:, -1:]). Return the logits at the last position, (B, V).
    raise NotImplementedError("Task 8: next_logits")


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
    # TODO(Task 9): a KVCache(len(model.blocks)) when use_cache; then per step: next_logits, sample_next,
    #   eos bookkeeping (a finished row repeats eos_id), append to ids, yield the token, stop when all are done.
    raise NotImplementedError("Task 9: generate_stream")
    yield  # makes this a generator function, as the solution's is


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
    # TODO(Task 9): concatenate the prompt and every token generate_stream yields (each as a column).
    raise NotImplementedError("Task 9: generate")
