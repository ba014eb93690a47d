"""Stage 1.1 — positional embeddings: the sinusoidal table and a learned table.

Your tasks (the lesson, README.md, walks through each one):
  Task 1  sinusoidal_table             the fixed table of "Attention Is All You Need" §3.5
  Task 2  SinusoidalPositionalEncoding  add that table to a batch, held as a buffer
  Task 3  LearnedPositionalEmbedding    a trainable table, one row per position
  Task 4  TokenEmbedding               token ids -> vectors, scaled by sqrt(d_model)

Grade your work with:  nox -s grade -- 1.1
"""

from __future__ import annotations

import math  # noqa: F401  (you will want math.log / math.sqrt)

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
    # TODO(Task 1): validate d_model and max_len, then build the table.
    #   positions (max_len, 1) times inverse frequencies (d_model/2,) -> angles (max_len, d_model/2);
    #   sin goes in the even columns 0, 2, 4, ...; cos of the *same* angle in the odd columns.
    raise NotImplementedError("Task 1: sinusoidal_table")


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to a batch of embeddings (then dropout, as in the paper).

    The table must be a *buffer* named ``pe`` of shape (max_len, d_model): it moves
    with ``.to()`` and is saved in ``state_dict``, but no optimizer may change it.
    """

    pe: torch.Tensor

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0) -> None:
        super().__init__()
        # TODO(Task 2): keep d_model and max_len, make an nn.Dropout, and register the
        #   table from sinusoidal_table as a buffer called "pe" (hint: self.register_buffer).
        raise NotImplementedError("Task 2: SinusoidalPositionalEncoding.__init__")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model), dropout(x + PE[:T]).

        Raises ValueError when T > max_len.
        """
        # TODO(Task 2): check T, add the first T rows of the table (they broadcast over B).
        raise NotImplementedError("Task 2: SinusoidalPositionalEncoding.forward")


class LearnedPositionalEmbedding(nn.Module):
    """A learned absolute position embedding (GPT-2's ``wpe``): one trainable row per position.

    Contract (stage 1.6 and Part 2 rely on it): the table is ``self.embedding = nn.Embedding(max_len, d_model)``.
    """

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        # TODO(Task 3): a trainable (max_len, d_model) table: self.embedding = nn.Embedding(max_len, d_model).
        raise NotImplementedError("Task 3: LearnedPositionalEmbedding.__init__")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model), x + P[:T] with P the learned table.

        Raises ValueError when T > max_len (there is no learned row for those positions).
        """
        # TODO(Task 3): look up rows 0..T-1 (on x's device) and add them.
        raise NotImplementedError("Task 3: LearnedPositionalEmbedding.forward")


class TokenEmbedding(nn.Module):
    """Token ids -> vectors, multiplied by sqrt(d_model) as in the paper (§3.4).

    Contract (stage 1.6 and Part 2 rely on it): the table is ``self.embedding = nn.Embedding(vocab_size, d_model)``.
    """

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        # TODO(Task 4): self.embedding = nn.Embedding(vocab_size, d_model); keep d_model.
        raise NotImplementedError("Task 4: TokenEmbedding.__init__")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, T) integer token ids -> (B, T, d_model), scaled by sqrt(d_model)."""
        # TODO(Task 4)
        raise NotImplementedError("Task 4: TokenEmbedding.forward")
