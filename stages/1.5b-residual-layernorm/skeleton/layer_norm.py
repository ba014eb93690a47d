"""Stage 1.5b — LayerNorm from scratch, residual connections, pre-LN vs post-LN.

Your tasks (the lesson, README.md, walks through each one):
  Task 1  LayerNorm           normalise each token over its features, then scale and shift
  Task 2  SublayerConnection  the residual connection, with the norm before (pre-LN) or after (post-LN)
Then run the lesson's experiment (already written, below):
  python stages/1.5b-residual-layernorm/skeleton/layer_norm.py

Grade your work with:  nox -s grade -- 1.5b
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["LayerNorm", "SublayerConnection", "last_layer_grad_norm"]


class LayerNorm(nn.Module):
    """Layer normalisation (Ba, Kiros & Hinton, 2016) over the last axis.

    y = (x - mean) / sqrt(var + eps) * weight + bias, with mean and the *biased* variance
    (divide by d, not d - 1) taken over the last axis of each token separately.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-5) -> None:
        super().__init__()
        # TODO(Task 1): keep normalized_shape and eps; make two learnable (d,) parameters, exactly so named
        #   (stage 1.6 copies weights into them): self.weight = ones, self.bias = zeros (nn.Parameter).
        raise NotImplementedError("Task 1: LayerNorm.__init__")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., d) -> (..., d), each vector x[..., :] normalised on its own."""
        # TODO(Task 1): mean and biased variance over the last axis (keepdim=True, so they are (..., 1));
        #   compute the variance as the mean of (x - mean)², then (x - mean) / sqrt(var + eps) * weight + bias.
        raise NotImplementedError("Task 1: LayerNorm.forward")

    def extra_repr(self) -> str:  # given: what print(module) shows
        return f"{self.normalized_shape}, eps={self.eps}"


class SublayerConnection(nn.Module):
    """A residual connection around ``sublayer``, with LayerNorm before or after it.

    post-LN (``norm_first=False``, the 2017 paper):  norm(x + dropout(sublayer(x)))
    pre-LN  (``norm_first=True``,  GPT-2):           x + dropout(sublayer(norm(x)))
    """

    def __init__(self, d_model: int, dropout: float = 0.0, norm_first: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        # TODO(Task 2): keep norm_first; make self.norm = LayerNorm(d_model, eps=eps) and self.dropout = nn.Dropout(dropout).
        raise NotImplementedError("Task 2: SublayerConnection.__init__")

    def forward(self, x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """x: (B, T, d_model); sublayer maps (B, T, d_model) -> (B, T, d_model). Returns (B, T, d_model)."""
        # TODO(Task 2): the two formulas in the class docstring. Dropout goes on the sublayer's output only.
        raise NotImplementedError("Task 2: SublayerConnection.forward")


def last_layer_grad_norm(depth: int, norm_first: bool, d_model: int = 32, seed: int = 0) -> float:
    """The lesson's experiment: at initialisation, how large is the gradient of the *top* layer's weights?

    Builds ``depth`` SublayerConnections around position-wise MLPs (Linear -> ReLU -> Linear,
    Xavier-initialised weights, zero biases, as in Xiong et al. 2020), plus a final LayerNorm
    for pre-LN (GPT-2's ``ln_f``). Feeds a random (2, 8, d_model) batch, takes the loss
    sum(output * probe) for a fixed random probe, and returns the Frobenius norm of the
    gradient of the last MLP's output weight. Deterministic for a given seed.
    """
    gen = torch.Generator().manual_seed(seed)
    blocks = nn.ModuleList(SublayerConnection(d_model, norm_first=norm_first) for _ in range(depth))
    mlps = nn.ModuleList(
        nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.ReLU(), nn.Linear(4 * d_model, d_model)) for _ in range(depth)
    )
    for mlp in mlps:
        for layer in (mlp[0], mlp[2]):
            bound = (6.0 / (layer.in_features + layer.out_features)) ** 0.5  # Xavier-uniform
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.zero_()
    final_norm = LayerNorm(d_model) if norm_first else nn.Identity()
    x = torch.randn(2, 8, d_model, generator=gen)  # (B, T, d_model)
    probe = torch.randn(2, 8, d_model, generator=gen)  # a fixed random readout
    h = x
    for block, mlp in zip(blocks, mlps, strict=True):
        h = block(h, mlp)
    loss = (final_norm(h) * probe).sum()
    (grad,) = torch.autograd.grad(loss, mlps[-1][2].weight)
    return float(grad.norm())


if __name__ == "__main__":
    for norm_first, name in ((True, "pre-LN "), (False, "post-LN")):
        norms = "  ".join(f"L={L:<2d} {last_layer_grad_norm(L, norm_first):6.1f}" for L in (1, 6, 12, 24))
        print(f"{name} top-layer gradient norm:  {norms}")
