"""Stage 1.2 — self-attention from first principles, in NumPy.

Your tasks (the lesson, README.md, walks through each one):
  Task 1  softmax                       a numerically stable softmax along one axis
  Task 2  scaled_dot_product_attention  softmax(Q K^T / sqrt(d_k)) V, with an optional mask
  Task 3  causal_mask                   the (T, T) mask that hides the future
  Task 4  self_attention                project x to Q, K, V and attend

Mask convention (the whole course): in a boolean mask, True means "blocked": that
query may NOT attend to that key (as in torch.nn.MultiheadAttention's ``attn_mask``).

NumPy only: no torch in this file. Grade your work with:  nox -s grade -- 1.2
"""

from __future__ import annotations

import math  # noqa: F401  (you will want math.sqrt)

import numpy as np

__all__ = ["softmax", "scaled_dot_product_attention", "causal_mask", "self_attention"]


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``: exp(x_i - max x) / sum_j exp(x_j - max x).

    Subtracting the max changes nothing mathematically (it cancels between numerator and
    denominator) but keeps every exponent <= 0, so exp never overflows.

    Args:
        x: float array of any shape, e.g. attention scores (..., Tq, Tk). Entries may be -inf
            (they get weight 0) as long as each slice along ``axis`` has a finite entry.
        axis: the axis to normalise over; the slices along it sum to 1.
    Returns:
        array of the same shape as ``x``; ``x`` itself is left unchanged.
    """
    # TODO(Task 1): subtract the max along `axis` (np.max(..., keepdims=True)), exponentiate, and
    #   divide by the sum along the same `axis` (again keepdims=True, so it broadcasts back).
    #   Do not modify x in place.
    raise NotImplementedError("Task 1: softmax")


def scaled_dot_product_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V  ("Attention Is All You Need", eq. 1).

    Args:
        q: queries (..., Tq, d_k).
        k: keys    (..., Tk, d_k).
        v: values  (..., Tk, d_v).
        mask: optional bool array broadcastable to (..., Tq, Tk); True = blocked (query i may
            not attend to key j). E.g. causal_mask(T) of shape (T, T), or a padding mask (B, 1, Tk).
    Returns:
        output (..., Tq, d_v): each query's weighted average of the values.
        weights (..., Tq, Tk): the attention weights; each row sums to 1, blocked entries are 0.
        A query whose keys are *all* blocked attends to nothing: its weights row and its output
        row are all zeros (not NaN), and no warning is raised.
    """
    # TODO(Task 2): scores = Q K^T / sqrt(d_k), shape (..., Tq, Tk). Transpose only the last two
    #   axes of k (np.swapaxes(k, -1, -2)), so leading batch axes stay put.
    #   If there is a mask: set the blocked scores to -inf *before* the softmax (np.where).
    #   Softmax over the keys (the last axis), then weights @ v.
    #   Rows whose keys are all blocked: return zero weights (and so a zero output), no NaN.
    raise NotImplementedError("Task 2: scaled_dot_product_attention")


def causal_mask(T: int) -> np.ndarray:
    """The causal (look-ahead) mask: token i may attend to tokens 0..i, never to the future.

    Returns:
        bool array (T, T) with mask[i, j] = True (blocked) exactly when j > i, i.e. strictly
        above the diagonal. The diagonal is False: every token may attend to itself.
    """
    # TODO(Task 3): True strictly above the diagonal, as a bool array (np.triu has a `k` argument).
    raise NotImplementedError("Task 3: causal_mask")


def self_attention(
    x: np.ndarray, w_q: np.ndarray, w_k: np.ndarray, w_v: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Single-head self-attention: queries, keys and values are all projections of the same x.

    Args:
        x: token vectors (..., T, d_model).
        w_q: query projection (d_model, d_k).
        w_k: key projection (d_model, d_k).
        w_v: value projection (d_model, d_v).
        mask: optional bool array broadcastable to (..., T, T); True = blocked.
    Returns:
        output (..., T, d_v) and weights (..., T, T), as scaled_dot_product_attention.
    """
    # TODO(Task 4): Q = x W_q, K = x W_k, V = x W_v, then scaled_dot_product_attention (pass the mask on).
    raise NotImplementedError("Task 4: self_attention")
