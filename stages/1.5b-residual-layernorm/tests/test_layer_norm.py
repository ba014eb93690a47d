"""Graded checks for stage 1.5b — LayerNorm, residual connections, pre-LN vs post-LN.

Reference numerics: ``torch.nn.LayerNorm`` (same eps, weight and bias; in float64 for the
large-offset check), and the two arrangements composed by hand from ``torch.nn.LayerNorm``
and a fixed sublayer: post-LN ``norm(x + sublayer(x))`` ("Attention Is All You Need" §5.4)
and pre-LN ``x + sublayer(norm(x))`` (GPT-2). The depth experiment follows Xiong et al.
(2020), "On Layer Normalization in the Transformer Architecture".
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.testing import GradingError, check, check_close, covers, depends_on, fail

# ---------------------------------------------------------------- the formula and its named mistakes

Tensor = torch.Tensor


def layer_norm_by(
    x: Tensor,
    w: Tensor,
    b: Tensor,
    eps: float,
    *,
    dims: tuple[int, ...] = (-1,),
    unbiased: bool = False,
    eps_outside: bool = False,
    no_eps: bool = False,
) -> Tensor:
    """(x - mean) / sqrt(var + eps) * w + b over ``dims``, or a named mistake's version of it."""
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=unbiased)
    if no_eps:
        return (x - mean) / torch.sqrt(var) * w + b
    if eps_outside:
        return (x - mean) / (torch.sqrt(var) + eps) * w + b
    return (x - mean) / torch.sqrt(var + eps) * w + b


def norm_mistakes(x: Tensor, w: Tensor, b: Tensor, eps: float) -> dict[str, Callable[[], Tensor]]:
    """The common LayerNorm mistakes, computed on the same input; x is (B, T, d)."""
    return {
        "unbiased variance (torch.var's default, dividing by d - 1); LayerNorm divides by d": (
            lambda: layer_norm_by(x, w, b, eps, unbiased=True)
        ),
        "eps outside the square root (sqrt(var) + eps instead of sqrt(var + eps))": (
            lambda: layer_norm_by(x, w, b, eps, eps_outside=True)
        ),
        "no eps at all (division by sqrt(var))": lambda: layer_norm_by(x, w, b, eps, no_eps=True),
        "the eps argument ignored (1e-5 used)": lambda: layer_norm_by(x, w, b, 1e-5),
        "normalised over the batch axis (dim 0) instead of the feature axis (dim -1)": (
            lambda: layer_norm_by(x, w, b, eps, dims=(0,))
        ),
        "normalised over the time axis (dim 1) instead of the feature axis (dim -1)": (
            lambda: layer_norm_by(x, w, b, eps, dims=(1,))
        ),
        "normalised over time and features together instead of per token": (
            lambda: layer_norm_by(x, w, b, eps, dims=(1, 2))
        ),
        "weight and bias not applied": lambda: layer_norm_by(x, torch.ones_like(w), torch.zeros_like(b), eps),
    }


def params_of(m: nn.Module, d: int) -> tuple[nn.Parameter, nn.Parameter]:
    """LayerNorm's weight and bias, checked to be learnable (d,) parameters (stage 1.6 copies into them)."""
    names = dict(m.named_parameters())
    for name in ("weight", "bias"):
        if name not in names:
            if isinstance(getattr(m, name, None), torch.Tensor):
                fail(
                    f"LayerNorm.{name} is a plain tensor, not a learnable parameter: wrap it in nn.Parameter"
                    " so that optimizers (and .parameters()) see it"
                )
            fail(f"LayerNorm needs learnable parameters named 'weight' and 'bias'; it has {sorted(names)}")
        shape = tuple(names[name].shape)
        check(shape == (d,), f"LayerNorm({d}).{name} should have shape ({d},), got {shape}")
    return names["weight"], names["bias"]


def randomise(m: nn.Module, d: int) -> tuple[Tensor, Tensor]:
    """Give the learner's LayerNorm a random weight and bias; return copies for the reference."""
    w, b = params_of(m, d)
    with torch.no_grad():
        w.copy_(1.0 + 0.5 * torch.randn(d))
        b.copy_(0.5 * torch.randn(d))
    return w.detach().clone(), b.detach().clone()


def torch_ln(d: int, eps: float, w: Tensor, b: Tensor) -> nn.LayerNorm:
    ref = nn.LayerNorm(d, eps=eps)
    with torch.no_grad():
        ref.weight.copy_(w)
        ref.bias.copy_(b)
    return ref


def varied_tokens(B: int, T: int, d: int) -> Tensor:
    """Tokens whose scales range over 1e-2 ... 10 and whose means are shifted: eps and the axis both matter."""
    scale = torch.logspace(-2, 1, B * T).reshape(B, T, 1)
    return torch.randn(B, T, d) * scale + torch.randn(B, T, 1) * 3


# ---------------------------------------------------------------- Task 1: LayerNorm


@pytest.mark.points(3)
@covers("LayerNorm")
def test_layernorm_matches_torch(impl) -> None:
    """LayerNorm matches torch.nn.LayerNorm (same eps, weight and bias) on tokens of very different scales"""
    B, T, d, eps = 2, 5, 16, 1e-3
    m = impl.LayerNorm(d, eps=eps)
    w, b = randomise(m, d)
    x = varied_tokens(B, T, d)
    got = m(x)
    with torch.no_grad():
        expected = torch_ln(d, eps, w, b)(x)
    check_close(
        got,
        expected,
        what=f"LayerNorm({d}, eps={eps}) on x of shape {(B, T, d)}",
        atol=1e-5,
        rtol=1e-4,
        reference="torch.nn.LayerNorm",
        mistakes=norm_mistakes(x, w, b, eps),
    )


@covers("LayerNorm")
def test_layernorm_constant_token(impl) -> None:
    """a constant token (all features equal) comes out as the bias, with no NaN"""
    d = 8
    m = impl.LayerNorm(d)
    w, b = randomise(m, d)
    x = torch.tensor([0.0, 3.0, -7.5, 1e3]).reshape(1, 4, 1).expand(1, 4, d).contiguous()  # (1, 4, d)
    got = m(x)
    check_close(
        got,
        b.expand(1, 4, d),
        what="LayerNorm(8) on tokens whose features are all equal (0, 3, -7.5, 1e3)",
        atol=1e-5,
        reference="x - mean = 0, so the output is 0 * weight + bias",
        mistakes={
            "no eps at all (division by sqrt(var) = 0 gives 0/0 = NaN)": lambda: layer_norm_by(
                x, w, b, 1e-5, no_eps=True
            )
        },
    )


@covers("LayerNorm")
def test_layernorm_large_offset(impl) -> None:
    """values near 1e4 in float32 are normalised accurately (variance as the mean of (x - mean)²)"""
    d = 16
    m = impl.LayerNorm(d)
    x = torch.randn(2, 4, d) + 1e4  # float32: the spacing of representable numbers near 1e4 is about 1e-3
    got = m(x)
    w, b = torch.ones(d), torch.zeros(d)
    expected = F.layer_norm(x.double(), (d,)).float()  # the exact answer for this float32 input

    def one_pass() -> Tensor:  # E[x²] - E[x]²: two numbers near 1e8 whose difference is about 1
        mean = x.mean(dim=-1, keepdim=True)
        var = x.pow(2).mean(dim=-1, keepdim=True) - mean.pow(2)
        return (x - mean) / torch.sqrt(var + 1e-5) * w + b

    try:
        check_close(
            got,
            expected,
            what="LayerNorm(16) on x = randn(2, 4, 16) + 1e4 (float32)",
            atol=1e-2,
            rtol=1e-2,
            reference="torch.nn.functional.layer_norm in float64",
            mistakes={
                "variance as E[x²] - E[x]², which cancels catastrophically in float32 for large offsets": one_pass
            },
        )
    except GradingError as err:
        if "Likely mistake" in str(err):
            raise
        centred = x - 1e4  # the same values without the offset
        if not torch.allclose(m(centred), F.layer_norm(centred, (d,)), atol=1e-4, rtol=1e-4):
            raise  # wrong without the offset too: the large offset is not the cause, so no advice about it
        raise GradingError(
            f"{err}\n  Hint: compute the variance as the mean of (x - mean)², not as E[x²] - E[x]²."
        ) from None


@covers("LayerNorm")
def test_layernorm_defaults_give_zero_mean_unit_variance(impl) -> None:
    """with its initial weight (ones) and bias (zeros), LayerNorm gives every token mean 0 and variance 1"""
    B, T, d = 3, 7, 32
    m = impl.LayerNorm(d)
    w, b = params_of(m, d)
    check_close(w, torch.ones(d), what="LayerNorm(32).weight at initialisation (should be ones)", atol=0)
    check_close(b, torch.zeros(d), what="LayerNorm(32).bias at initialisation (should be zeros)", atol=0)
    x = torch.randn(B, T, d) * 4 + 2
    got = m(x).detach()
    check_close(
        got.mean(dim=-1),
        torch.zeros(B, T),
        what="mean over the features of each output token",
        atol=1e-5,
        mistakes={k: (lambda f=f: f().mean(dim=-1)) for k, f in norm_mistakes(x, w.detach(), b.detach(), 1e-5).items()},
    )
    mistakes = {
        k: (lambda f=f: f().var(dim=-1, unbiased=False))
        for k, f in norm_mistakes(x, w.detach(), b.detach(), 1e-5).items()
    }
    check_close(
        got.var(dim=-1, unbiased=False),
        torch.ones(B, T),
        atol=1e-3,
        what="variance (biased, divide by d) over the features of each output token",
        mistakes=mistakes,
    )


@covers("LayerNorm")
def test_layernorm_gradients(impl) -> None:
    """weight, bias and the input get the same gradients as in torch.nn.LayerNorm"""
    d = 12
    m = impl.LayerNorm(d)
    w, b = randomise(m, d)
    x = torch.randn(2, 3, d) * 2 + 1
    probe = torch.randn(2, 3, d)
    x1 = x.clone().requires_grad_(True)
    (m(x1) * probe).sum().backward()
    ref = torch_ln(d, 1e-5, w, b)
    x2 = x.clone().requires_grad_(True)
    (ref(x2) * probe).sum().backward()
    weight, bias = params_of(m, d)
    check(
        weight.grad is not None and bias.grad is not None,
        "LayerNorm.weight / .bias received no gradient: are they nn.Parameters used in forward?",
    )
    check_close(
        weight.grad,
        ref.weight.grad,
        what="gradient of the loss w.r.t. LayerNorm.weight",
        atol=1e-5,
        reference="torch.nn.LayerNorm",
    )
    check_close(
        bias.grad,
        ref.bias.grad,
        what="gradient of the loss w.r.t. LayerNorm.bias",
        atol=1e-5,
        reference="torch.nn.LayerNorm",
    )

    def detached(mean_too: bool, var_too: bool) -> Callable[[], Tensor]:
        def grad() -> Tensor:
            xd = x.clone().requires_grad_(True)
            mean = xd.mean(dim=-1, keepdim=True)
            mean = mean.detach() if mean_too else mean
            var = (xd - mean).pow(2).mean(dim=-1, keepdim=True)
            var = var.detach() if var_too else var
            (((xd - mean) / torch.sqrt(var + 1e-5) * w + b) * probe).sum().backward()
            return xd.grad

        return grad

    check(x1.grad is not None, "no gradient reached the input x: is something detached or computed under no_grad?")
    check_close(
        x1.grad,
        x2.grad,
        what="gradient of the loss w.r.t. the input x",
        atol=1e-5,
        rtol=1e-4,
        reference="torch.nn.LayerNorm",
        mistakes={
            "mean and variance detached from the graph (.detach() / no_grad)": detached(True, True),
            "the mean detached from the graph (.detach() / no_grad)": detached(True, False),
            "the variance detached from the graph (.detach() / no_grad)": detached(False, True),
        },
    )


# ---------------------------------------------------------------- Task 2: SublayerConnection


def fixed_sublayer(d: int) -> Callable[[Tensor], Tensor]:
    lin = nn.Linear(d, d)
    return lambda z: torch.tanh(lin(z)) * 2  # any position-wise function of z will do


def connection(impl, d: int, **kwargs: object) -> tuple[nn.Module, nn.LayerNorm]:
    """The learner's SublayerConnection with a random norm weight/bias, and torch's LayerNorm with the same."""
    m = impl.SublayerConnection(d, **kwargs)
    check(
        isinstance(getattr(m, "norm", None), nn.Module),
        "SublayerConnection needs its LayerNorm as a submodule named 'norm' (stage 1.6 copies weights into it)",
    )
    check(
        isinstance(m.norm, impl.LayerNorm),
        f"SublayerConnection.norm should be this stage's LayerNorm, got {type(m.norm).__name__}",
    )
    w, b = randomise(m.norm, d)
    eps = float(kwargs.get("eps", 1e-5))  # type: ignore[arg-type]
    return m, torch_ln(d, eps, w, b)


def arrangement_mistakes(x: Tensor, f: Callable[[Tensor], Tensor], ln: nn.Module) -> dict[str, Callable[[], Tensor]]:
    return {
        "pre-LN and post-LN swapped (computed x + sublayer(norm(x)))": lambda: x + f(ln(x)),
        "pre-LN and post-LN swapped (computed norm(x + sublayer(x)))": lambda: ln(x + f(x)),
        "no residual connection (the input x is not added back)": lambda: f(ln(x)),
        "no residual connection (norm(sublayer(x)), the input x is not added back)": lambda: ln(f(x)),
        "the residual adds the normalised input, norm(x) + sublayer(norm(x)), instead of x": lambda: ln(x) + f(ln(x)),
        "the norm applied to the sublayer's output only, x + norm(sublayer(x))": lambda: x + ln(f(x)),
        "no LayerNorm at all (x + sublayer(x))": lambda: x + f(x),
    }


@pytest.mark.points(2)
@depends_on("LayerNorm")
def test_post_ln(impl) -> None:
    """post-LN (norm_first=False, the 2017 paper): output = norm(x + sublayer(x))"""
    d = 16
    m, ln = connection(impl, d, norm_first=False)
    f = fixed_sublayer(d)
    x = torch.randn(2, 5, d) * 2
    got = m(x, f)
    with torch.no_grad():
        expected = ln(x + f(x))
        mistakes = arrangement_mistakes(x, f, ln)
    check_close(
        got,
        expected,
        what="SublayerConnection(16, norm_first=False)(x, sublayer)",
        atol=1e-5,
        rtol=1e-4,
        reference="nn.LayerNorm(x + sublayer(x))",
        mistakes=mistakes,
    )


@pytest.mark.points(2)
@depends_on("LayerNorm")
def test_pre_ln_is_the_default(impl) -> None:
    """pre-LN (the default, GPT-2): output = x + sublayer(norm(x))"""
    d = 16
    m, ln = connection(impl, d)
    f = fixed_sublayer(d)
    x = torch.randn(2, 5, d) * 2
    got = m(x, f)
    with torch.no_grad():
        expected = x + f(ln(x))
        mistakes = arrangement_mistakes(x, f, ln)
    check_close(
        got,
        expected,
        what="SublayerConnection(16)(x, sublayer) with the default norm_first=True",
        atol=1e-5,
        rtol=1e-4,
        reference="x + sublayer(nn.LayerNorm(x))",
        mistakes=mistakes,
    )


@depends_on("LayerNorm")
def test_connection_passes_eps(impl) -> None:
    """SublayerConnection(d, eps=...) builds its LayerNorm with that eps"""
    d, eps = 8, 0.1
    m, ln = connection(impl, d, eps=eps)
    x = torch.randn(2, 3, d) * 0.1  # variance 0.01, comparable to eps
    f = fixed_sublayer(d)
    got = m(x, f)
    with torch.no_grad():
        expected = x + f(ln(x))
        default_eps = x + f(torch_ln(d, 1e-5, ln.weight, ln.bias)(x))
    check_close(
        got,
        expected,
        what=f"SublayerConnection({d}, eps={eps}) on x of scale 0.1",
        atol=1e-5,
        rtol=1e-4,
        reference=f"x + sublayer(nn.LayerNorm({d}, eps={eps})(x))",
        mistakes={"eps not passed on to the LayerNorm (1e-5 used)": default_eps},
    )


@depends_on("LayerNorm")
def test_dropout_only_on_the_sublayer_branch(impl) -> None:
    """dropout hits only the sublayer's output, never the residual path; it is off in eval mode"""
    d, p = 8, 0.5
    x = torch.randn(2, 4, d)
    f = fixed_sublayer(d)
    for norm_first in (True, False):
        m, ln = connection(impl, d, dropout=p, norm_first=norm_first)
        m.train()
        torch.manual_seed(7)
        got = m(x, f)
        with torch.no_grad():
            if norm_first:
                s = f(ln(x))
                torch.manual_seed(7)
                expected = x + F.dropout(s, p, training=True)
                torch.manual_seed(7)
                on_sum = F.dropout(x + s, p, training=True)
                plain = x + s
            else:
                s = f(x)
                torch.manual_seed(7)
                expected = ln(x + F.dropout(s, p, training=True))
                torch.manual_seed(7)
                on_sum = ln(F.dropout(x + s, p, training=True))
                plain = ln(x + s)
        arrangement = "pre-LN" if norm_first else "post-LN"
        check_close(
            got,
            expected,
            what=f"{arrangement} SublayerConnection(dropout={p}) in training mode (same seed)",
            atol=1e-5,
            rtol=1e-4,
            reference="dropout on sublayer's output only",
            mistakes={
                "dropout applied to the sum x + sublayer(...), so it also drops the residual path": on_sum,
                "no dropout (the dropout argument is ignored)": plain,
            },
        )
        m.eval()
        check_close(
            m(x, f),
            plain,
            what=f"{arrangement} SublayerConnection(dropout={p}) in eval mode (dropout off)",
            atol=1e-5,
            rtol=1e-4,
        )


# ---------------------------------------------------------------- the lesson's experiment


def experiment_by_torch(depth: int, arrangement: str, final_norm: bool, d: int = 32, seed: int = 0) -> float:
    """``last_layer_grad_norm`` rebuilt from torch.nn.LayerNorm, with the arrangement and the final norm chosen freely."""
    gen = torch.Generator().manual_seed(seed)
    mlps = [nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d)) for _ in range(depth)]
    norms = [nn.LayerNorm(d) for _ in range(depth)]
    for mlp in mlps:
        for layer in (mlp[0], mlp[2]):
            bound = (6.0 / (layer.in_features + layer.out_features)) ** 0.5
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.zero_()
    x = torch.randn(2, 8, d, generator=gen)
    probe = torch.randn(2, 8, d, generator=gen)
    h = x
    for norm, mlp in zip(norms, mlps, strict=True):
        h = h + mlp(norm(h)) if arrangement == "pre" else norm(h + mlp(h))
    out = F.layer_norm(h, (d,)) if final_norm else h
    (grad,) = torch.autograd.grad((out * probe).sum(), mlps[-1][2].weight)
    return float(grad.norm())


@pytest.mark.points(2)
@depends_on("LayerNorm")
def test_depth_experiment(impl) -> None:
    """at initialisation the top layer's gradient shrinks with depth in pre-LN and stays put in post-LN (Xiong et al.)"""
    # ~2000 tiny ops: one thread avoids OpenMP hand-offs that cost more than the ops on a busy 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pre_1, pre_24 = impl.last_layer_grad_norm(1, norm_first=True), impl.last_layer_grad_norm(24, norm_first=True)
        post_1, post_24 = (
            impl.last_layer_grad_norm(1, norm_first=False),
            impl.last_layer_grad_norm(24, norm_first=False),
        )
    finally:
        torch.set_num_threads(threads)
    numbers = (
        f"pre-LN: {pre_1:.1f} at 1 layer, {pre_24:.1f} at 24 layers;"
        f" post-LN: {post_1:.1f} at 1 layer, {post_24:.1f} at 24 layers"
    )
    check(
        all(v == v and 1e-3 < v < 1e4 for v in (pre_1, pre_24, post_1, post_24)),
        f"last_layer_grad_norm gave a NaN, zero or huge gradient norm: {numbers}",
    )
    hint = ""
    if pre_24 >= 0.6 * pre_1 or post_24 <= 0.6 * post_1 or post_24 <= 1.6 * pre_24:
        # norm_first read the wrong way round: the pre-LN run builds post-LN blocks (then the final norm), and vice versa
        swapped = (experiment_by_torch(24, "post", final_norm=True), experiment_by_torch(24, "pre", final_norm=False))
        if all(abs(g - s) <= 1e-3 * s for g, s in zip((pre_24, post_24), swapped, strict=True)):
            hint = (
                "\n  Likely mistake: pre-LN and post-LN swapped (norm_first=True must give"
                " x + dropout(sublayer(norm(x)))); your numbers match what that mistake produces."
            )
    check(
        pre_24 < 0.6 * pre_1,
        f"in pre-LN the residual stream grows with depth and the final LayerNorm divides by its size, so the top"
        f" layer's gradient should shrink (by about 1/sqrt(1 + 0.3·L)); got {numbers}{hint}",
    )
    check(
        post_24 > 0.6 * post_1 and post_24 > 1.6 * pre_24,
        f"in post-LN every layer re-normalises, so the top layer's gradient should not depend on depth and should be"
        f" well above pre-LN's at 24 layers; got {numbers}{hint}",
    )


# ---------------------------------------------------------------- devices and precision


@depends_on("LayerNorm")
def test_on_every_device_and_precision(impl, setting) -> None:
    """LayerNorm and a pre-LN SublayerConnection give the reference result on this device / precision"""
    d = 16
    m, ln = connection(impl, d)
    lin = nn.Linear(d, d)
    x = torch.randn(2, 7, d) * 3 + 1
    with torch.no_grad():
        expected_norm = ln(x)
        expected = x + lin(ln(x))
    m = setting.module(m)
    lin_dev = setting.module(lin)
    with setting.autocast():
        xd = setting.tensor(x)
        got_norm = m.norm(xd)
        got = m(xd, lin_dev)
    setting.sync()
    check(got.device.type == setting.device, f"output on {got.device}, expected {setting.device}")
    check_close(
        got_norm.float().cpu(),
        expected_norm,
        what=f"LayerNorm(16) on {setting.id}",
        **setting.tol,
        mistakes=norm_mistakes(x, ln.weight.detach(), ln.bias.detach(), 1e-5),
    )
    check_close(
        got.float().cpu(),
        expected,
        what=f"pre-LN SublayerConnection(16) with a Linear sublayer on {setting.id}",
        **setting.tol,
    )
