"""A learner's Stage 1.5b file (norm_first_inverted).

mistake: norm_first read the wrong way round
expect: swapped
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
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(normalized_shape))  # (d,)  the gain, gamma
        self.bias = nn.Parameter(torch.zeros(normalized_shape))  # (d,)  the shift, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., d) -> (..., d), each vector x[..., :] normalised on its own."""
        dtype = x.dtype
        if dtype in (torch.float16, torch.bfloat16):
            x = x.float()  # statistics in float32: half precision loses too much in the sums
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        centred = x - mean  # (..., d)
        var = centred.pow(2).mean(dim=-1, keepdim=True)  # (..., 1)  biased: divide by d
        x_hat = centred / torch.sqrt(var + self.eps)  # (..., d)  eps inside the root
        return (x_hat * self.weight + self.bias).to(dtype)  # (d,) broadcasts over the leading axes

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class SublayerConnection(nn.Module):
    """A residual connection around ``sublayer``, with LayerNorm before or after it.

    post-LN (``norm_first=False``, the 2017 paper):  norm(x + dropout(sublayer(x)))
    pre-LN  (``norm_first=True``,  GPT-2):           x + dropout(sublayer(norm(x)))
    """

    def __init__(self, d_model: int, dropout: float = 0.0, norm_first: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.norm = LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """x: (B, T, d_model); sublayer maps (B, T, d_model) -> (B, T, d_model). Returns (B, T, d_model)."""
        if not self.norm_first:
            return x + self.dropout(sublayer(self.norm(x)))  # the residual path carries x untouched
        return self.norm(x + self.dropout(sublayer(x)))


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
