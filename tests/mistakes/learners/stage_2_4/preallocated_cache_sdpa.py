"""A learner's stage 2.4 in another style.

correct: a preallocated KV cache with a length counter, attention through F.scaled_dot_product_attention with an explicit mask, nanoGPT's threshold top-k, top-p in float64 with an exclusive cumsum, an explicit loop in generate
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from shared.loader import load_dep

_mha = load_dep("1.4")
split_heads = _mha.split_heads
merge_heads = _mha.merge_heads
GPT = load_dep("2.2").GPT

__all__ = ["apply_temperature", "top_k_filter", "top_p_filter", "next_token_probs", "sample_next", "crop_context",
           "KVCache", "cached_attention", "forward_step", "next_logits", "generate_stream", "generate"]


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    return logits * (1.0 / temperature)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k < 1:
        raise ValueError("k must be >= 1")
    k = min(k, logits.size(-1))
    v, _ = torch.topk(logits, k)
    out = logits.clone()
    out[out < v[..., [-1]]] = -float("inf")
    return out


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    if p <= 0 or p > 1:
        raise ValueError("p must be in (0, 1]")
    probs = torch.softmax(logits.double(), dim=-1)
    sorted_probs, idx = torch.sort(probs, dim=-1, descending=True, stable=True)
    before = torch.cat([torch.zeros_like(sorted_probs[..., :1]), sorted_probs.cumsum(-1)[..., :-1]], dim=-1)
    remove_sorted = before >= p
    remove = remove_sorted.scatter(-1, idx, remove_sorted)
    return logits.masked_fill(remove, -1e30)


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    z = apply_temperature(logits.double(), temperature)
    if top_k:
        z = top_k_filter(z, top_k)
    if top_p:
        z = top_p_filter(z, top_p)
    return torch.softmax(z, dim=-1)


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    if temperature == 0:
        return torch.argmax(logits, dim=-1)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def crop_context(ids: torch.Tensor, block_size: int) -> torch.Tensor:
    return ids[:, max(0, ids.size(1) - block_size):]


class KVCache:
    def __init__(self, n_layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None for _ in range(n_layers)]
        self.values: list[torch.Tensor | None] = [None for _ in range(n_layers)]
        self.filled = [0 for _ in range(n_layers)]

    @property
    def length(self) -> int:
        return self.filled[0] if self.filled else 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t = self.filled[layer], k.size(2)
        buf = self.keys[layer]
        if buf is None or buf.size(2) < n + t:  # grow the buffers (double them)
            size = max(16, 2 * (n + t))
            new_k = k.new_zeros(k.size(0), k.size(1), size, k.size(3))
            new_v = v.new_zeros(v.size(0), v.size(1), size, v.size(3))
            if buf is not None:
                new_k[:, :, :n] = buf[:, :, :n]
                new_v[:, :, :n] = self.values[layer][:, :, :n]
            self.keys[layer], self.values[layer] = new_k, new_v
        self.keys[layer][:, :, n : n + t] = k
        self.values[layer][:, :, n : n + t] = v
        self.filled[layer] = n + t
        return self.keys[layer][:, :, : n + t], self.values[layer][:, :, : n + t]

    def reset(self) -> None:
        self.filled = [0 for _ in self.filled]


def cached_attention(attn: nn.Module, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
    t = x.size(1)
    q = split_heads(attn.q_proj(x), attn.n_heads)
    k, v = cache.update(layer, split_heads(attn.k_proj(x), attn.n_heads), split_heads(attn.v_proj(x), attn.n_heads))
    total = k.size(2)
    qpos = torch.arange(total - t, total, device=x.device)[:, None]
    kpos = torch.arange(total, device=x.device)[None, :]
    allowed = kpos <= qpos  # (t, total): True = may attend
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return attn.out_proj(merge_heads(out))


def forward_step(model: GPT, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
    start = cache.length
    if start + ids.size(1) > model.config.block_size:
        raise ValueError("no learned position past block_size")
    pos = model.pos_emb.embedding.weight[start : start + ids.size(1)]
    h = model.drop(model.tok_emb(ids) + pos)
    for layer, block in enumerate(model.blocks):
        a = cached_attention(block.attn, block.attn_sub.norm(h), cache, layer)
        h = h + block.attn_sub.dropout(a)
        h = h + block.ff_sub.dropout(block.ff(block.ff_sub.norm(h)))
    return model.lm_head(model.ln_f(h))


def next_logits(model: GPT, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
    bs = model.config.block_size
    if cache is None:
        return model(crop_context(ids, bs))[0][:, -1, :]
    if ids.size(1) <= bs and cache.length == ids.size(1) - 1 and cache.length > 0:
        return forward_step(model, ids[:, -1:], cache)[:, -1, :]
    cache.reset()
    return forward_step(model, crop_context(ids, bs), cache)[:, -1, :]


@torch.no_grad()
def generate_stream(model: GPT, ids: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None, eos_id: int | None = None, generator: torch.Generator | None = None,
                    use_cache: bool = True) -> Iterator[torch.Tensor]:
    cache = KVCache(len(model.blocks)) if use_cache else None
    done = [False] * ids.size(0)
    for _ in range(max_new_tokens):
        nxt = sample_next(next_logits(model, ids, cache), temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        if eos_id is not None:
            for b in range(ids.size(0)):
                if done[b]:
                    nxt[b] = eos_id
                elif int(nxt[b]) == eos_id:
                    done[b] = True
        ids = torch.cat([ids, nxt.unsqueeze(1)], dim=1)
        yield nxt
        if eos_id is not None and all(done):
            break


def generate(model: GPT, ids: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, eos_id: int | None = None, generator: torch.Generator | None = None,
             use_cache: bool = True) -> torch.Tensor:
    out = ids
    for tok in generate_stream(model, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                               eos_id=eos_id, generator=generator, use_cache=use_cache):
        out = torch.cat([out, tok[:, None]], dim=1)
    return out
