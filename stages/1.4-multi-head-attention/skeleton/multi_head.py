"""Stage 1.4 — multi-head attention: split, attend, concat, project; self- and cross-attention.

Your tasks (the lesson, README.md, walks through each one):
  Task 1  MultiHeadAttention.__init__   check d_model % n_heads, make the four projections
  Task 2  split_heads, merge_heads      (B, T, d_model) <-> (B, n_heads, T, d_head), with view + transpose
  Task 3  merge_masks                   padding, attn_mask and causality as one boolean + one additive mask
  Task 4  MultiHeadAttention.forward    project, split, attend (_attend), merge, out_proj; the weights
  Task 5  MultiHeadAttention._sdpa      the same attention through F.scaled_dot_product_attention

Mask convention (the whole course, as torch.nn.MultiheadAttention): in a boolean mask
``True`` means *blocked* — that query may NOT attend to that key. A float mask is *added*
to the scores (0 = no change, -inf = blocked).

Grade your work with:  nox -s grade -- 1.4
"""

from __future__ import annotations

import math  # noqa: F401  (you will want math.sqrt)

import torch
import torch.nn.functional as F  # noqa: F401  (Task 5: F.scaled_dot_product_attention)
from torch import nn

__all__ = ["split_heads", "merge_heads", "merge_masks", "additive_mask", "MultiHeadAttention"]


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, d_model) -> (B, n_heads, T, d_head): head i owns features i*d_head ... (i+1)*d_head - 1."""
    # TODO(Task 2): view as (B, T, n_heads, d_head), then swap the T and head axes (transpose(1, 2)).
    #   A reshape straight to (B, n_heads, T, d_head) runs without error but mixes tokens into heads.
    raise NotImplementedError("Task 2: split_heads")


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, n_heads, T, d_head) -> (B, T, n_heads * d_head): the inverse of split_heads (concat the heads)."""
    # TODO(Task 2): transpose back to (B, T, n_heads, d_head), then .reshape(B, T, d_model)
    #   (after a transpose the memory is not contiguous, so .view would fail; reshape copies).
    raise NotImplementedError("Task 2: merge_heads")


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
    # TODO(Task 3): start from blocked = None, bias = None and OR in, each viewed to broadcast over (B, h, Tq, Tk):
    #   key_padding_mask -> (B, 1, 1, Tk)      (it blocks KEYS: the last axis)
    #   attn_mask (Tq, Tk) -> (1, 1, Tq, Tk);  (B*n_heads, Tq, Tk) -> (B, n_heads, Tq, Tk)  (torch's order)
    #     bool: OR it into blocked.  float: its -inf entries (isneginf) into blocked, the rest is the bias.
    #   is_causal -> (1, 1, Tq, Tk), True above the diagonal (triu(1)), created on `device`
    #   Raise ValueError for a key_padding_mask or attn_mask of any other shape.
    raise NotImplementedError("Task 3: merge_masks")


def additive_mask(blocked: torch.Tensor | None, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """One float mask to add to the scores: ``bias`` (or 0) where allowed, -inf where ``blocked``; or None.

    Given (not a task). Adding it costs one pass over the scores and nothing in backward
    (masked_fill costs a pass both ways). Safe only when no row is blocked everywhere:
    forward unblocks such rows first (Task 4).
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
        # TODO(Task 1): raise ValueError (naming d_model and n_heads) unless n_heads >= 1 divides d_model;
        #   keep d_model, n_heads, d_head and use_sdpa; make q_proj, k_proj, v_proj, out_proj
        #   (nn.Linear(d_model, d_model, bias=bias)) and self.dropout = nn.Dropout(dropout).
        raise NotImplementedError("Task 1: MultiHeadAttention.__init__")

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
        # TODO(Task 4):
        #   1. key defaults to query, value to key.
        #   2. q, k, v = split_heads(self.q_proj(query), h), ... -> (B, h, Tq, dh), (B, h, Tk, dh), (B, h, Tk, dh)
        #   3. blocked, bias = merge_masks(...). When padding or attn_mask is given, find the queries whose keys
        #      are ALL blocked: empty = blocked.all(dim=-1, keepdim=True); unblock them (blocked & ~empty).
        #   4. out, weights = self._attend(q, k, v, additive_mask(blocked, bias, q.dtype))
        #      (Task 5: with use_sdpa and not need_weights, out = self._sdpa(...) and weights = None.)
        #   5. zero the empty rows: out.masked_fill(empty, 0.0), and the weights too.
        #   6. out = self.out_proj(merge_heads(out)); weights averaged over heads (dim=1) if asked.
        raise NotImplementedError("Task 4: MultiHeadAttention.forward")

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The explicit path: q (B, h, Tq, dh), k, v (B, h, Tk, dh), mask additive (.., Tq, Tk) or None.

        Returns out (B, h, Tq, dh) and weights (B, h, Tq, Tk).
        """
        # TODO(Task 4): scores = q k^T / sqrt(d_head) (scale by d_head, the width of ONE head);
        #   add the mask; softmax over the keys; dropout on the weights in training mode; weights @ v.
        raise NotImplementedError("Task 4: MultiHeadAttention._attend")

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
        # TODO(Task 5): build SDPA's attn_mask: ~blocked when there is no bias; otherwise the bias (in q.dtype)
        #   with -inf where blocked. dropout_p = self.dropout.p in training mode, else 0.0. Pass is_causal through.
        #   Return F.scaled_dot_product_attention(q, k, v, attn_mask=..., dropout_p=..., is_causal=is_causal).
        raise NotImplementedError("Task 5: MultiHeadAttention._sdpa")
