"""Stage 1.3 — one attention head in PyTorch, with causal and padding masks.

Your tasks (the lesson, README.md, walks through each one):
  Task 1  causal_mask     the (T, T) look-ahead mask, True where a query may NOT look (the future)
  Task 2  attention       softmax(q k^T / sqrt(d_k)) v, with an optional mask and dropout
  Task 3  AttentionHead   project x to q, k, v; build the mask; attend

Mask convention (the whole course, as torch.nn.MultiheadAttention): in a boolean mask
``True`` means *blocked* — that query may NOT attend to that key.

Grade your work with:  nox -s grade -- 1.3
"""

from __future__ import annotations

import math  # noqa: F401  (you will want math.sqrt)

import torch
from torch import nn

__all__ = ["causal_mask", "attention", "AttentionHead"]


def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The causal (look-ahead) mask: query i may not attend to keys j > i.

    Returns:
        bool tensor of shape (T, T); ``mask[i, j]`` is True (blocked) exactly when j > i.
    """
    # TODO(Task 1): a (T, T) bool tensor on `device`, True strictly above the diagonal.
    #   torch.ones(..., dtype=torch.bool, device=device) and .triu(diagonal=...) will do it.
    raise NotImplementedError("Task 1: causal_mask")


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
            are all blocked gets weights all zero and an output of zeros, never NaN (the
            fully-masked rule of stage 1.2).
        dropout: applied to the attention weights (e.g. an ``nn.Dropout``), or None.
    Returns:
        (out, weights): out (..., Tq, d_v); weights (..., Tq, Tk), the weights actually
        applied to v (after dropout, as torch.nn.MultiheadAttention returns them).
    """
    # TODO(Task 2):
    #   1. scores = q k^T / sqrt(d_k)                  -> (..., Tq, Tk)   (k.transpose(-2, -1))
    #   2. blocked scores become -inf                   (scores.masked_fill(mask, float("-inf")))
    #   3. softmax over the KEY axis (the last one), so each query's weights sum to 1
    #   4. the fully-masked rule (stage 1.2): a query whose keys are ALL blocked gets weights 0 and no NaN.
    #      empty = mask.all(dim=-1, keepdim=True) finds those rows; their softmax came out 0/0 = NaN, so
    #      weights.masked_fill(empty, 0.0) (not in place: autograd needs the softmax's output). Exact here,
    #      gradients included, because every score of such a row was masked_fill'ed in step 2.
    #   5. dropout on the weights (if given), then out = weights @ v
    raise NotImplementedError("Task 2: attention")


class AttentionHead(nn.Module):
    """One head of self-attention: project x to queries, keys and values, then attend.

    Submodules: ``query``, ``key``, ``value`` (each ``nn.Linear(d_model, d_head, bias=bias)``)
    and ``dropout`` (``nn.Dropout`` on the attention weights, active in training mode only).
    """

    def __init__(self, d_model: int, d_head: int, dropout: float = 0.0, bias: bool = False) -> None:
        super().__init__()
        # TODO(Task 3): keep d_model and d_head; make self.query, self.key, self.value
        #   (nn.Linear(d_model, d_head, bias=bias)) and self.dropout (nn.Dropout(dropout)).
        raise NotImplementedError("Task 3: AttentionHead.__init__")

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
        # TODO(Task 3): project x to q, k, v (each (B, T, d_head)); build one bool mask from
        #   causal_mask(T, device=x.device) (T, T) and/or key_padding_mask viewed as (B, 1, T)
        #   (padding blocks KEYS, so it varies along the last axis); call attention(...).
        raise NotImplementedError("Task 3: AttentionHead.forward")
