"""A learner's Stage 1.5a file (tanh_sqrt_typo).

mistake: sqrt(2/pi) typed as 0.7797
expect: sqrt(2/pi)
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["gelu", "GELU", "FeedForward"]


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """The Gaussian Error Linear Unit (Hendrycks & Gimpel, 2016), elementwise.

    ``"none"``: GELU(x) = x · Φ(x) = 0.5 · x · (1 + erf(x / √2)), Φ the standard normal CDF.
    ``"tanh"``: GELU(x) ≈ 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))), GPT-2's form.

    Args:
        x: any shape, e.g. (B, T, d_ff).
        approximate: ``"none"`` (exact, with erf) or ``"tanh"``.
    Returns:
        a tensor of x's shape and dtype.
    Raises:
        ValueError: for any other ``approximate``.
    """
    if approximate == "none":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if approximate == "tanh":
        inner = 0.7797 * (x + 0.044715 * x.pow(3))
        return 0.5 * x * (1.0 + torch.tanh(inner))  # torch.tanh saturates at ±1: no overflow for large |x|
    raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


class GELU(nn.Module):
    """``gelu`` as a module, so it can sit in a network like ``nn.ReLU``."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: any shape -> same shape."""
        return gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class FeedForward(nn.Module):
    """FFN(x) = Linear2(dropout(GELU(Linear1(x)))), applied to every position independently.

    "Attention Is All You Need" §3.3 (with ReLU); GPT-2 and BERT use GELU. The hidden
    width d_ff is 4 · d_model unless given. ``activation="relu"`` gives the paper's ReLU
    (``nn.ReLU``) in place of the GELU; ``approximate`` then does not matter.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        approximate: str = "none",
        bias: bool = True,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', got {activation!r}")
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.d_model = d_model
        self.d_ff = d_ff
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)  # weight: (d_ff, d_model)
        self.activation = GELU(approximate) if activation == "gelu" else nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)  # weight: (d_model, d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model); any leading shape (..., d_model) works."""
        h = self.activation(self.linear1(x))  # (B, T, d_ff)
        return self.linear2(self.dropout(h))  # (B, T, d_model)
