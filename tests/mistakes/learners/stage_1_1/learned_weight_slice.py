"""A learner's Stage 1.1 file (learned_weight_slice).

correct: the learned rows taken as a slice of embedding.weight
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["sinusoidal_table", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding", "TokenEmbedding"]


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """The fixed positional-encoding table of "Attention Is All You Need" §3.5.

    PE[pos, 2i]   = sin(pos / 10000^(2i / d_model))
    PE[pos, 2i+1] = cos(pos / 10000^(2i / d_model))

    Args:
        max_len: number of positions (rows), >= 1.
        d_model: embedding width (columns); must be even, since columns come in sin/cos pairs.
    Returns:
        float32 tensor of shape (max_len, d_model).
    Raises:
        ValueError: if d_model is odd or not positive, or max_len < 1.
    """
    if d_model <= 0 or d_model % 2 != 0:
        raise ValueError(f"d_model must be a positive even number (sin/cos pairs), got {d_model}")
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model/2,)  = 0, 2, 4, ...
    inv_freq = torch.exp(-math.log(10000.0) * two_i / d_model)  # (d_model/2,) = 1 / 10000^(2i/d)
    angles = pos * inv_freq  # (max_len, d_model/2)
    table = torch.empty(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)  # even columns: sin
    table[:, 1::2] = torch.cos(angles)  # odd columns: cos of the same frequency
    return table.to(torch.float32)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to a batch of embeddings (then dropout, as in the paper).

    The table is a *buffer*: it moves with ``.to()`` and is saved in ``state_dict``,
    but it is not a parameter, so no optimizer ever changes it.
    """

    pe: torch.Tensor

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoidal_table(max_len, d_model))  # (max_len, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model), x + PE[:T]."""
        T = x.size(1)
        if T > self.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len={self.max_len} of the positional table")
        return self.dropout(x + self.pe[:T].to(x.dtype))  # (T, d_model) broadcasts over B


class LearnedPositionalEmbedding(nn.Module):
    """A learned absolute position embedding (GPT-2's ``wpe``): one trainable row per position.

    Contract (stage 1.6 and Part 2 rely on it): the table is ``self.embedding = nn.Embedding(max_len, d_model)``.
    """

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)  # weight: (max_len, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model), x + P[:T] with P the learned table."""
        T = x.size(1)
        if T > self.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len={self.max_len}: no learned row for those positions")
        positions = torch.arange(T, device=x.device)  # (T,)  # noqa: F841 (a leftover line: still correct)
        return x + self.embedding.weight[:T].to(x.dtype)  # (T, d_model) broadcasts over B


class TokenEmbedding(nn.Module):
    """Token ids -> vectors, multiplied by sqrt(d_model) as in the paper (§3.4).

    Contract (stage 1.6 and Part 2 rely on it): the table is ``self.embedding = nn.Embedding(vocab_size, d_model)``.
    """

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)  # weight: (vocab_size, d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, T) integer token ids -> (B, T, d_model)."""
        return self.embedding(ids) * math.sqrt(self.d_model)
