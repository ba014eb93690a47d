"""A learner's Stage 1.3 file (einsum_where).

correct: einsum scores, torch.where masking, softmax by hand
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["causal_mask", "attention", "AttentionHead"]


def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The causal (look-ahead) mask: query i may not attend to keys j > i.

    Returns:
        bool tensor of shape (T, T); ``mask[i, j]`` is True (blocked) exactly when j > i.
    """
    return torch.ones(T, T, dtype=torch.bool, device=device).triu(diagonal=1)  # (T, T), True above the diagonal


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, softmax(q k^T / sqrt(d_k)) v ("Attention Is All You Need", eq. 1).

    Args:
        q: (..., Tq, d_k) queries.
        k: (..., Tk, d_k) keys.
        v: (..., Tk, d_v) values.
        mask: bool, broadcastable to (..., Tq, Tk); True = blocked. A query row whose keys
            are all blocked gets weights all zero and an output of zeros (never NaN).
        dropout: applied to the attention weights (e.g. an ``nn.Dropout``), or None.
    Returns:
        (out, weights): out (..., Tq, d_v); weights (..., Tq, Tk), the weights actually
        applied to v (after dropout, as torch.nn.MultiheadAttention returns them).
    """
    d_k = q.size(-1)
    scores = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(d_k)  # (..., Tq, Tk)
    if mask is not None:
        scores = torch.where(mask, torch.full_like(scores, float("-inf")), scores)
    weights = torch.softmax(scores, -1)  # (..., Tq, Tk): each query's weights over the keys sum to 1
    if mask is not None:
        # A row with every key blocked is all -inf; its softmax is 0/0 = NaN. Define it as zeros.
        weights = weights.masked_fill(mask.all(dim=-1, keepdim=True), 0.0)
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v, weights  # (..., Tq, d_v), (..., Tq, Tk)


class AttentionHead(nn.Module):
    """One head of self-attention: project x to queries, keys and values, then attend.

    Submodules: ``query``, ``key``, ``value`` (each ``nn.Linear(d_model, d_head, bias=bias)``)
    and ``dropout`` (``nn.Dropout`` on the attention weights, active in training mode only).
    """

    def __init__(self, d_model: int, d_head: int, dropout: float = 0.0, bias: bool = False) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_head = d_head
        self.query = nn.Linear(d_model, d_head, bias=bias)
        self.key = nn.Linear(d_model, d_head, bias=bias)
        self.value = nn.Linear(d_model, d_head, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        causal: bool = False,
        key_padding_mask: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, d_model) -> (B, T, d_head), or (out, weights (B, T, T)) if return_weights.

        Args:
            causal: block every key after its query (a decoder's look-ahead mask).
            key_padding_mask: (B, T) bool, True where x holds padding: no query attends there.
        """
        T = x.size(1)
        q, k, v = self.query(x), self.key(x), self.value(x)  # each (B, T, d_head)
        mask = None
        if causal:
            mask = causal_mask(T, device=x.device)  # (T, T), broadcasts over B
        if key_padding_mask is not None:
            pad = key_padding_mask[:, None, :]  # (B, 1, T): the same keys blocked for every query
            mask = pad if mask is None else mask | pad  # (B, T, T)
        out, weights = attention(q, k, v, mask=mask, dropout=self.dropout)
        return (out, weights) if return_weights else out
