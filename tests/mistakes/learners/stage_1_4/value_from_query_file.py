"""A learner's Stage 1.4 file (value_from_query_file).

mistake: value defaults to the query
expect: value defaulted to query
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["split_heads", "merge_heads", "merge_masks", "additive_mask", "MultiHeadAttention"]


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, d_model) -> (B, n_heads, T, d_head): head i owns features i*d_head ... (i+1)*d_head - 1."""
    B, T, d_model = x.shape
    return x.view(B, T, n_heads, d_model // n_heads).transpose(1, 2)  # (B, T, h, dh) -> (B, h, T, dh)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, n_heads, T, d_head) -> (B, T, n_heads * d_head): the inverse of split_heads (concat the heads)."""
    B, h, T, d_head = x.shape
    return x.transpose(1, 2).reshape(B, T, h * d_head)  # (B, T, h, dh) -> (B, T, d_model)


def merge_masks(
    B: int,
    n_heads: int,
    Tq: int,
    Tk: int,
    *,
    key_padding_mask: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Combine every kind of mask into one boolean and one additive mask, both broadcastable to (B, h, Tq, Tk).

    Args:
        key_padding_mask: (B, Tk) bool, True where the key is padding.
        attn_mask: (Tq, Tk) or (B * n_heads, Tq, Tk); bool (True = blocked) or float (added to the scores).
        is_causal: also block every key j > query i.
    Returns:
        (blocked, bias): ``blocked`` bool (True = may not attend) or None; ``bias`` float or None.
        A float mask's -inf entries are moved into ``blocked`` (and zeroed in ``bias``).
    """
    blocked: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    def add(m: torch.Tensor) -> None:
        nonlocal blocked
        blocked = m if blocked is None else blocked | m

    if key_padding_mask is not None:
        if key_padding_mask.shape != (B, Tk):
            raise ValueError(f"key_padding_mask must have shape (B, Tk) = {(B, Tk)}, got {tuple(key_padding_mask.shape)}")
        add(key_padding_mask.to(torch.bool).view(B, 1, 1, Tk))  # (B, 1, 1, Tk): the same keys for every head and query
    if attn_mask is not None:
        if attn_mask.dim() == 2:
            m = attn_mask.view(1, 1, Tq, Tk)  # (1, 1, Tq, Tk): the same for every sequence and head
        elif attn_mask.dim() == 3 and attn_mask.size(0) == B * n_heads:
            m = attn_mask.view(B, n_heads, Tq, Tk)  # (B*h, Tq, Tk) -> (B, h, Tq, Tk), torch's order: b * h + head
        else:
            raise ValueError(f"attn_mask must be (Tq, Tk) or (B*n_heads, Tq, Tk), got {tuple(attn_mask.shape)}")
        if m.dtype == torch.bool:
            add(m)
        else:
            neg_inf = m.isneginf()
            add(neg_inf)
            bias = m.masked_fill(neg_inf, 0.0)
    if is_causal:
        add(torch.ones(Tq, Tk, dtype=torch.bool, device=device).triu(1).view(1, 1, Tq, Tk))  # (1, 1, Tq, Tk)
    return blocked, bias


def additive_mask(blocked: torch.Tensor | None, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """One float mask to add to the scores: ``bias`` (or 0) where allowed, -inf where ``blocked``; or None.

    Adding it costs one pass over the scores and nothing in backward (masked_fill costs a pass both ways).
    Safe only when no row is blocked everywhere: MultiHeadAttention unblocks such rows first.
    """
    if blocked is None:
        return None if bias is None else bias.to(dtype)
    base = torch.zeros(blocked.shape, dtype=dtype, device=blocked.device) if bias is None else bias.to(dtype)
    return base.masked_fill(blocked, float("-inf"))  # small: the masks' shape, not (B, h, Tq, Tk)


class MultiHeadAttention(nn.Module):
    """Multi-head attention ("Attention Is All You Need" §3.2.2), batch first.

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

    Attributes: ``d_model``, ``n_heads``, ``d_head = d_model // n_heads``. Submodules: ``q_proj``,
    ``k_proj``, ``v_proj``, ``out_proj`` (each ``nn.Linear(d_model, d_model, bias=bias)``; head i
    owns rows i*d_head ... (i+1)*d_head - 1 of each projection's weight) and ``dropout`` (on the
    attention weights, training mode only). ``use_sdpa=True`` runs the attention itself through
    ``torch.nn.functional.scaled_dot_product_attention`` whenever the weights are not requested.

    A query whose keys are all blocked (the fully-masked rule of stage 1.2) gets weights all zero and an
    attention output of zeros before ``out_proj``, so its row of ``out`` is ``out_proj.bias`` (zeros when
    ``bias=False``); never NaN, in the output or the gradients.
    """

    def __init__(
        self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True, use_sdpa: bool = False
    ) -> None:
        super().__init__()
        if n_heads < 1 or d_model % n_heads != 0:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by n_heads ({n_heads}): each head gets d_model / n_heads features"
            )
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.use_sdpa = use_sdpa
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)  # W^Q of all heads side by side
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W^O
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        average_attn_weights: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query (B, Tq, d_model), key (B, Tk, d_model), value (B, Tk, d_model) -> (out, weights).

        key defaults to query and value to key: ``mha(x)`` is self-attention, ``mha(x, memory)``
        cross-attention. Returns out (B, Tq, d_model) and, if need_weights, the attention weights
        averaged over heads (B, Tq, Tk), or per head (B, n_heads, Tq, Tk) when average_attn_weights
        is False; otherwise None.
        """
        key = query if key is None else key
        value = query if value is None else value
        B, Tq, _ = query.shape
        Tk = key.size(1)
        h = self.n_heads

        q = split_heads(self.q_proj(query), h)  # (B, h, Tq, dh)
        k = split_heads(self.k_proj(key), h)  # (B, h, Tk, dh)
        v = split_heads(self.v_proj(value), h)  # (B, h, Tk, dh)

        use_sdpa = self.use_sdpa and not need_weights  # SDPA never returns the weights
        # SDPA has its own causal kernel: hand it is_causal when causality is the only mask.
        sdpa_causal = use_sdpa and is_causal and key_padding_mask is None and attn_mask is None
        blocked, bias = merge_masks(
            B, h, Tq, Tk, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
            is_causal=is_causal and not sdpa_causal, device=query.device,
        )
        # A query whose keys are ALL blocked (only padding or attn_mask can do that; causality cannot):
        # unblock its row so the softmax stays finite (and so do the gradients), then zero its output.
        empty = None
        if blocked is not None and (key_padding_mask is not None or attn_mask is not None):
            empty = blocked.all(dim=-1, keepdim=True)  # (.., Tq, 1): from the small masks, not the scores
            blocked = blocked & ~empty

        if use_sdpa:
            out, weights = self._sdpa(q, k, v, blocked, bias, is_causal=sdpa_causal), None
        else:
            out, weights = self._attend(q, k, v, additive_mask(blocked, bias, q.dtype))
            weights = weights if need_weights else None
        if empty is not None:
            out = out.masked_fill(empty, 0.0)  # (B, h, Tq, dh)
            if weights is not None:
                weights = weights.masked_fill(empty, 0.0)  # (B, h, Tq, Tk)

        out = self.out_proj(merge_heads(out))  # (B, h, Tq, dh) -> (B, Tq, d_model) -> W^O
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)  # (B, Tq, Tk)
        return out, weights

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The explicit path: q (B, h, Tq, dh), k, v (B, h, Tk, dh), mask additive (.., Tq, Tk) or None.

        Returns out (B, h, Tq, dh) and weights (B, h, Tq, Tk).
        """
        scores = (q * (1.0 / math.sqrt(self.d_head))) @ k.transpose(-2, -1)  # (B, h, Tq, Tk); scaling q is cheaper
        if mask is not None:
            scores = scores + mask  # 0 where allowed, -inf where blocked (one pass; its backward is free)
        weights = scores.softmax(dim=-1)  # over the keys
        if self.training and self.dropout.p > 0:
            weights = self.dropout(weights)
        return weights @ v, weights  # (B, h, Tq, dh), (B, h, Tq, Tk)

    def _sdpa(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        blocked: torch.Tensor | None,
        bias: torch.Tensor | None,
        *,
        is_causal: bool,
    ) -> torch.Tensor:
        """The same attention through torch's fused kernel. SDPA's bool mask means True = MAY attend: inverted."""
        mask: torch.Tensor | None = None
        if bias is not None:
            mask = bias.to(q.dtype)
            if blocked is not None:
                mask = mask.masked_fill(blocked, float("-inf"))
        elif blocked is not None:
            mask = ~blocked
        p = self.dropout.p if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
