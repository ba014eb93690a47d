from tests.mistakes import Mistake

_VAR = "var = centred.pow(2).mean(dim=-1, keepdim=True)"
_NORM = "x_hat = centred / torch.sqrt(var + self.eps)"
_PRE = "return x + self.dropout(sublayer(self.norm(x)))"

MISTAKES = [
    Mistake(
        "1.5b",
        "unbiased variance",
        _VAR,
        "var = x.var(dim=-1, keepdim=True)",
        "unbiased variance",
    ),
    Mistake(
        "1.5b",
        "eps outside the square root",
        _NORM,
        "x_hat = centred / (torch.sqrt(var) + self.eps)",
        "eps outside the square root",
    ),
    Mistake(
        "1.5b",
        "no eps at all",
        _NORM,
        "x_hat = centred / torch.sqrt(var)",
        "no eps at all",
    ),
    Mistake(
        "1.5b",
        "normalised over the batch axis",
        "mean = x.mean(dim=-1, keepdim=True)  # (..., 1)\n        centred = x - mean  # (..., d)\n"
        "        var = centred.pow(2).mean(dim=-1, keepdim=True)",
        "mean = x.mean(dim=0, keepdim=True)  # (..., 1)\n        centred = x - mean  # (..., d)\n"
        "        var = centred.pow(2).mean(dim=0, keepdim=True)",
        "normalised over the batch axis",
    ),
    Mistake(
        "1.5b",
        "normalised over the time axis",
        "mean = x.mean(dim=-1, keepdim=True)  # (..., 1)\n        centred = x - mean  # (..., d)\n"
        "        var = centred.pow(2).mean(dim=-1, keepdim=True)",
        "mean = x.mean(dim=1, keepdim=True)  # (..., 1)\n        centred = x - mean  # (..., d)\n"
        "        var = centred.pow(2).mean(dim=1, keepdim=True)",
        "normalised over the time axis",
    ),
    Mistake(
        "1.5b",
        "variance as E[x²] - E[x]²",
        _VAR,
        "var = x.pow(2).mean(dim=-1, keepdim=True) - mean.pow(2)",
        "E[x²] - E[x]²",
    ),
    Mistake(
        "1.5b",
        "mean and variance detached from the graph",
        "mean = x.mean(dim=-1, keepdim=True)  # (..., 1)\n        centred = x - mean",
        "mean = x.mean(dim=-1, keepdim=True).detach()  # (..., 1)\n        centred = x - mean",
        "detached from the graph",
    ),
    Mistake(
        "1.5b",
        "weight and bias not applied",
        "return (x_hat * self.weight + self.bias).to(dtype)",
        "return x_hat.to(dtype)",
        "weight and bias not applied",
    ),
    Mistake(
        "1.5b",
        "pre-LN and post-LN swapped",
        "if self.norm_first:\n",
        "if not self.norm_first:\n",
        "pre-LN and post-LN swapped",
    ),
    Mistake(
        "1.5b",
        "the residual adds the normalised input",
        _PRE,
        "h = self.norm(x)\n            return h + self.dropout(sublayer(h))",
        "the residual adds the normalised input",
    ),
    Mistake(
        "1.5b",
        "dropout applied to the sum, dropping the residual path too",
        _PRE,
        "return self.dropout(x + sublayer(self.norm(x)))",
        "dropout applied to the sum",
    ),
    Mistake(
        "1.5b",
        "eps not passed on to the LayerNorm",
        "self.norm = LayerNorm(d_model, eps=eps)",
        "self.norm = LayerNorm(d_model)",
        "eps not passed on to the LayerNorm",
    ),
]
