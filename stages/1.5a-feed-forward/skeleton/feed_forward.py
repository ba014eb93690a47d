"""Stage 1.5a — the position-wise feed-forward network and GELU.

Your tasks (the lesson, README.md, walks through each one):
  Task 1  gelu         GELU(x) = x·Φ(x), exactly (erf) and in GPT-2's tanh approximation
  Task 2  GELU         gelu as an nn.Module
  Task 3  FeedForward  Linear(d_model -> d_ff) -> GELU -> dropout -> Linear(d_ff -> d_model)

Grade your work with:  nox -s grade -- 1.5a
"""

from __future__ import annotations

import math  # noqa: F401  (you will want math.sqrt and math.pi)

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
    # TODO(Task 1): write both forms from the formulas above with torch.erf and torch.tanh
    #   (not F.gelu or nn.GELU: the grader checks). Any other `approximate` raises ValueError.
    raise NotImplementedError("Task 1: gelu")


class GELU(nn.Module):
    """``gelu`` as a module, so it can sit in a network like ``nn.ReLU``."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        # TODO(Task 2): reject an unknown `approximate` with ValueError and keep it as self.approximate.
        raise NotImplementedError("Task 2: GELU.__init__")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: any shape -> same shape."""
        # TODO(Task 2)
        raise NotImplementedError("Task 2: GELU.forward")

    def extra_repr(self) -> str:  # given: what print(module) shows, e.g. GELU(approximate='tanh')
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
        # TODO(Task 3): d_ff defaults to 4 * d_model. Make, with exactly these names (stage 1.6 uses them):
        #   self.linear1 = nn.Linear(d_model, d_ff, bias=bias)   self.activation = GELU(approximate)
        #   self.dropout = nn.Dropout(dropout)                   self.linear2 = nn.Linear(d_ff, d_model, bias=bias)
        #   activation="relu": self.activation = nn.ReLU() instead; any other activation raises ValueError.
        raise NotImplementedError("Task 3: FeedForward.__init__")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model); any leading shape (..., d_model) works."""
        # TODO(Task 3): linear1 -> activation -> dropout -> linear2. No residual here (that is stage 1.5b).
        raise NotImplementedError("Task 3: FeedForward.forward")
