"""A learner's Stage 1.2 file (logsumexp_einsum).

correct: softmax through log-sum-exp, scores with np.einsum
"""

from __future__ import annotations

import math

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
    m = np.max(x, axis=axis, keepdims=True)
    lse = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return np.exp(x - lse)


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
    d_k = q.shape[-1]
    scores = np.einsum('...qd,...kd->...qk', q, k) / math.sqrt(d_k)  # (..., Tq, d_k) @ (..., d_k, Tk) -> (..., Tq, Tk)
    if mask is not None:
        scores = np.where(mask, -np.inf, scores)  # blocked: exp(-inf) = 0, so weight exactly 0
        empty = np.all(mask, axis=-1, keepdims=True)  # (..., Tq, 1): queries that may attend to no key
        scores = np.where(empty, 0.0, scores)  # keep softmax away from -inf - (-inf) = NaN on those rows ...
    weights = softmax(scores, axis=-1)  # (..., Tq, Tk): normalise over the keys
    if mask is not None:
        weights = np.where(empty, 0.0, weights)  # ... and give them zero weights: they attend to nothing
    output = weights @ v  # (..., Tq, Tk) @ (..., Tk, d_v) -> (..., Tq, d_v)
    return output, weights


def causal_mask(T: int) -> np.ndarray:
    """The causal (look-ahead) mask: token i may attend to tokens 0..i, never to the future.

    Returns:
        bool array (T, T) with mask[i, j] = True (blocked) exactly when j > i, i.e. strictly
        above the diagonal. The diagonal is False: every token may attend to itself.
    """
    return np.triu(np.ones((T, T), dtype=bool), k=1)  # (T, T), True above the diagonal


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
    q = x @ w_q  # (..., T, d_k)
    k = x @ w_k  # (..., T, d_k)
    v = x @ w_v  # (..., T, d_v)
    return scaled_dot_product_attention(q, k, v, mask)
