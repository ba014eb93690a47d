"""Graded checks for stage 1.5a — the position-wise feed-forward network and GELU.

Reference numerics: ``torch.nn.functional.gelu`` (both ``approximate="none"`` and
``approximate="tanh"``) and ``torch.nn.functional.linear``, composed by hand with the
learner's own weights; the formulas of Hendrycks & Gimpel (2016) for the named mistakes.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.testing import check, check_close, covers, depends_on, expect_raises, fail, matching_mistakes

# ---------------------------------------------------------------- inputs and named mistakes


def wide_range() -> torch.Tensor:
    """-8 ... 8 in steps of 0.1, where every GELU variant differs, plus a few moderately large values (float32)."""
    return torch.cat([torch.linspace(-8.0, 8.0, 161), torch.tensor([-40.0, -15.0, 15.0, 40.0])])


def gelu_mistakes(x: torch.Tensor, approximate: str) -> dict[str, object]:
    """Outputs of the common ways to get GELU wrong, on the same input (float32, like the learner's)."""
    c = math.sqrt(2.0 / math.pi)
    tanh_form = lambda c=c, k=0.044715, p=3: 0.5 * x * (1.0 + torch.tanh(c * (x + k * x.pow(p))))  # noqa: E731
    common = {
        "ReLU where GELU belongs": lambda: torch.relu(x),
        "sigmoid approximation x·σ(1.702x) instead of GELU": lambda: x * torch.sigmoid(1.702 * x),
        "the factor 0.5 left out (x·(1 + erf(x/√2)) is 2·GELU)": lambda: x * (1.0 + torch.erf(x / math.sqrt(2.0))),
    }
    if approximate == "none":
        return {
            **common,
            "tanh approximation used where the exact (erf) GELU was asked for": tanh_form,
            "erf(x) instead of erf(x/√2)": lambda: 0.5 * x * (1.0 + torch.erf(x)),
            "Φ(x) alone (the CDF) instead of x·Φ(x)": lambda: 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))),
        }
    return {
        **common,
        "tanh constant sqrt(pi/2) instead of sqrt(2/pi)": lambda: tanh_form(c=math.sqrt(math.pi / 2.0)),
        "cubic coefficient 0.44715 instead of 0.044715": lambda: tanh_form(k=0.44715),
        "x² instead of x³ inside the tanh": lambda: tanh_form(p=2),
        "exact (erf) GELU returned although approximate='tanh' was asked for": lambda: F.gelu(x),
    }


def linears(m: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """The two projections of a FeedForward, by the names stage 1.6 relies on."""
    for name in ("linear1", "linear2", "activation", "dropout"):
        check(
            hasattr(m, name),
            f"FeedForward has no submodule '{name}'; keep the names linear1, activation, dropout,"
            " linear2 (stage 1.6 copies weights into linear1 and linear2)",
        )
    check(
        isinstance(m.linear1, nn.Linear) and isinstance(m.linear2, nn.Linear),
        f"linear1 and linear2 should be nn.Linear, got {type(m.linear1).__name__} and {type(m.linear2).__name__}",
    )
    return m.linear1, m.linear2


def composed(x: torch.Tensor, l1: nn.Linear, l2: nn.Linear, act: object = F.gelu) -> torch.Tensor:
    """Linear -> activation -> Linear with torch's functional ops and the module's own weights."""
    return F.linear(act(F.linear(x, l1.weight, l1.bias)), l2.weight, l2.bias)


# ---------------------------------------------------------------- Task 1: gelu


@pytest.mark.points(2)
@covers("gelu (exact)")
def test_gelu_exact_matches_torch(impl) -> None:
    """gelu(x) is x·Φ(x): it matches torch.nn.functional.gelu from -40 to 40"""
    x = wide_range()
    got = impl.gelu(x)
    check(
        isinstance(got, torch.Tensor) and got.dtype == torch.float32,
        f"gelu of a float32 tensor should return a float32 tensor, got {type(got).__name__} {getattr(got, 'dtype', '')}",
    )
    check_close(
        got,
        F.gelu(x),
        what="gelu(x) with approximate='none' on x in [-40, 40]",
        atol=1e-6,
        rtol=1e-5,
        reference="torch.nn.functional.gelu(x)",
        mistakes=gelu_mistakes(x, "none"),
    )


@pytest.mark.points(2)
def tanh_constants(x: torch.Tensor, got: torch.Tensor) -> dict[str, torch.Tensor]:
    """A typo in one tanh-GELU constant, found by solving for it: 0.5 x (1 + tanh(c (x + k x³))).

    From each point with a usable value, atanh(2 got / x - 1) = c (x + k x³). With k = 0.044715 this gives c
    per point, with c = sqrt(2/pi) it gives k; a typo in one constant makes that constant the same at every
    point (and not the paper's). The name then carries the constant found, and the mistake's output is
    recomputed with it, so it matches only when the fit explains every value.
    """
    xs, g = x.double(), got.detach().double()
    ok = (xs.abs() > 0.3) & (xs.abs() < 1.5)  # away from 0 (division) and from saturation (atanh of ±1)
    if int(ok.sum()) < 4 or not bool(torch.isfinite(g[ok]).all()):
        return {}
    u = torch.atanh((2 * g[ok] / xs[ok] - 1).clamp(-1 + 1e-12, 1 - 1e-12))
    out: dict[str, torch.Tensor] = {}
    c_true, k_true = math.sqrt(2.0 / math.pi), 0.044715
    c = u / (xs[ok] + k_true * xs[ok] ** 3)
    k = (u / c_true - xs[ok]) / xs[ok] ** 3
    form = lambda c, k: 0.5 * xs * (1.0 + torch.tanh(c * (xs + k * xs.pow(3))))  # noqa: E731
    if float(c.std()) < 1e-4 * abs(float(c.mean())) and abs(float(c.mean()) - c_true) > 1e-4:
        out[f"a typo in the tanh-GELU constant sqrt(2/pi) = 0.79788: yours is {float(c.mean()):.5g}"] = form(float(c.mean()), k_true)
    if float(k.std()) < 1e-3 * abs(float(k.mean())) and abs(float(k.mean()) - k_true) > 1e-6:
        out[f"a typo in the tanh-GELU cubic coefficient 0.044715: yours is {float(k.mean()):.5g}"] = form(c_true, float(k.mean()))
    return out


@covers("gelu (tanh)")
def test_gelu_tanh_matches_torch(impl) -> None:
    """gelu(x, "tanh") matches torch's tanh approximation from -40 to 40"""
    x = wide_range()
    got = impl.gelu(x, approximate="tanh")
    table = gelu_mistakes(x, "tanh")
    if not matching_mistakes(got, table, atol=1e-5, rtol=1e-4):  # a catalogued mistake explains it: no fitted name
        table.update(tanh_constants(x, got))
    check_close(
        got,
        F.gelu(x, approximate="tanh"),
        what="gelu(x, approximate='tanh') on x in [-40, 40]",
        atol=1e-6,
        rtol=1e-5,
        reference='torch.nn.functional.gelu(x, approximate="tanh")',
        mistakes=table,
    )


def test_gelu_huge_inputs_stay_finite(impl) -> None:
    """both forms stay finite for huge inputs (±1e4): GELU(x) -> x for large x, -> 0 for very negative x"""
    x = torch.tensor([-1e4, -1e3, -100.0, -50.0, 50.0, 100.0, 1e3, 1e4])

    def tanh_by_exp() -> torch.Tensor:  # tanh(u) = (e^2u - 1) / (e^2u + 1): inf / inf = NaN once e^2u overflows
        u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))
        e = torch.exp(2.0 * u)
        return 0.5 * x * (1.0 + (e - 1.0) / (e + 1.0))

    mistakes = {"tanh written with exp, (e^2u − 1)/(e^2u + 1), which overflows to inf/inf = NaN": tanh_by_exp}
    for approximate in ("none", "tanh"):
        got = impl.gelu(x, approximate=approximate)
        check_close(
            got,
            F.gelu(x, approximate=approximate),
            what=f"gelu(x, approximate={approximate!r}) on ±1e4",
            atol=1e-6,
            rtol=1e-6,
            reference="torch.nn.functional.gelu",
            mistakes=mistakes,
        )


def test_gelu_unknown_approximate_raises(impl) -> None:
    """an unknown approximate (e.g. "fast") raises ValueError instead of silently picking a form"""
    x = torch.linspace(-2.0, 2.0, 5)
    expect_raises(ValueError, impl.gelu, x, approximate="fast", what="gelu(x, approximate='fast')")

    def module_on_x() -> torch.Tensor:
        return impl.GELU(approximate="fast")(x)

    expect_raises(ValueError, module_on_x, what="GELU(approximate='fast') (at construction or on the first call)")


@depends_on("gelu (exact)", "gelu (tanh)")
def test_gelu_module(impl) -> None:
    """GELU(approximate) is a parameter-free module applying gelu in the chosen form"""
    x = torch.randn(2, 3, 5) * 3
    for approximate in ("none", "tanh"):
        m = impl.GELU(approximate=approximate)
        check(isinstance(m, nn.Module), f"GELU should be an nn.Module, got {type(m).__name__}")
        n = sum(p.numel() for p in m.parameters())
        check(n == 0, f"GELU has no learnable parameters, but GELU({approximate!r}) has {n}")
        other = "tanh" if approximate == "none" else "none"
        check_close(
            m(x),
            F.gelu(x, approximate=approximate),
            what=f"GELU({approximate!r}) on x of shape (2, 3, 5)",
            atol=1e-6,
            rtol=1e-5,
            reference="torch.nn.GELU",
            mistakes={
                f"GELU module ignores approximate (computes the {other!r} form)": lambda o=other: F.gelu(
                    x, approximate=o
                ),
                "ReLU where GELU belongs": lambda: torch.relu(x),
            },
        )
    check_close(
        impl.GELU()(x),
        F.gelu(x),
        what="GELU() (default: the exact form, approximate='none')",
        atol=1e-6,
        rtol=1e-5,
        mistakes={"GELU() defaults to the tanh form": lambda: F.gelu(x, approximate="tanh")},
    )


def test_gelu_built_from_its_formula(impl, monkeypatch) -> None:
    """gelu is written from its formula (torch.erf / torch.tanh), not by calling F.gelu or nn.GELU"""
    calls: list[str] = []
    real_gelu = F.gelu

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append("F.gelu")
        return real_gelu(*args, **kwargs)

    monkeypatch.setattr(F, "gelu", spy)
    x = torch.linspace(-3.0, 3.0, 7)
    impl.gelu(x)
    impl.gelu(x, approximate="tanh")
    impl.GELU()(x)
    check(
        not calls,
        "gelu called torch.nn.functional.gelu (directly or through nn.GELU); the task is to write it"
        " from its definition: 0.5·x·(1 + erf(x/√2)), and 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))",
    )
    check_close(
        impl.gelu(x),
        real_gelu(x),
        what="gelu(x) on [-3, 3]",
        atol=1e-6,
        rtol=1e-5,
        reference="torch.nn.functional.gelu",
        mistakes=gelu_mistakes(x, "none"),
    )


# ---------------------------------------------------------------- Task 2: FeedForward


@pytest.mark.points(2)
@depends_on("gelu (exact)")
def test_ffn_matches_hand_composed(impl) -> None:
    """FeedForward(x) = linear2(GELU(linear1(x))), as composed with F.linear and F.gelu"""
    m = impl.FeedForward(d_model=8, d_ff=24, dropout=0.1).eval()  # eval: dropout off
    l1, l2 = linears(m)
    x = torch.randn(2, 5, 8)
    got = m(x)
    with torch.no_grad():
        expected = composed(x, l1, l2)
        mistakes = {
            "ReLU where GELU belongs": lambda: composed(x, l1, l2, torch.relu),
            "tanh approximation used where the exact (erf) GELU was asked for": (
                lambda: composed(x, l1, l2, lambda h: F.gelu(h, approximate="tanh"))
            ),
            "no activation between the two linear layers (they collapse into one linear map)": (
                lambda: composed(x, l1, l2, lambda h: h)
            ),
            "GELU applied after linear2 as well": lambda: F.gelu(composed(x, l1, l2)),
            "residual added inside the FeedForward (x + FFN(x)); the residual belongs to stage 1.5b's SublayerConnection": (
                lambda: x + composed(x, l1, l2)
            ),
        }
    check_close(
        got,
        expected,
        what="FeedForward(8, 24) in eval mode on x of shape (2, 5, 8)",
        atol=1e-5,
        rtol=1e-4,
        reference="F.linear(F.gelu(F.linear(x, W1, b1)), W2, b2)",
        mistakes=mistakes,
    )


@depends_on("gelu (tanh)")
def test_ffn_tanh_option(impl) -> None:
    """FeedForward(approximate="tanh") uses the tanh form of GELU"""
    m = impl.FeedForward(d_model=8, d_ff=16, approximate="tanh").eval()
    l1, l2 = linears(m)
    x = torch.randn(2, 4, 8) * 3
    with torch.no_grad():
        expected = composed(x, l1, l2, lambda h: F.gelu(h, approximate="tanh"))
        exact = composed(x, l1, l2)
    check_close(
        m(x),
        expected,
        what="FeedForward(8, 16, approximate='tanh') on x of shape (2, 4, 8)",
        atol=1e-5,
        rtol=1e-4,
        reference='F.gelu(..., approximate="tanh") between F.linear calls',
        mistakes={"approximate not passed on to the GELU (the exact form is used)": exact},
    )


def test_ffn_relu_option(impl) -> None:
    """FeedForward(activation="relu") uses ReLU, the 2017 paper's activation; an unknown one raises ValueError"""
    m = impl.FeedForward(d_model=8, d_ff=16, activation="relu").eval()
    l1, l2 = linears(m)
    x = torch.randn(2, 4, 8) * 3
    with torch.no_grad():
        expected = composed(x, l1, l2, torch.relu)
        gelus = {
            "activation not passed on: GELU used where activation='relu' was asked for": composed(x, l1, l2),
            "activation not passed on: tanh GELU used where activation='relu' was asked for": (
                composed(x, l1, l2, lambda h: F.gelu(h, approximate="tanh"))
            ),
        }
    check_close(
        m(x),
        expected,
        what="FeedForward(8, 16, activation='relu') on x of shape (2, 4, 8)",
        atol=1e-5,
        rtol=1e-4,
        reference="F.linear(torch.relu(F.linear(x, W1, b1)), W2, b2) (Vaswani et al. 2017, eq. 2)",
        mistakes=gelus,
    )
    expect_raises(
        ValueError, impl.FeedForward, 8, 16, activation="swish", what="FeedForward(8, 16, activation='swish')"
    )


def test_ffn_default_expansion(impl) -> None:
    """d_ff defaults to 4·d_model: linear1 maps d_model -> 4·d_model and linear2 maps back"""
    d = 8
    m = impl.FeedForward(d_model=d)
    l1, l2 = linears(m)
    shapes = (tuple(l1.weight.shape), tuple(l2.weight.shape))
    if shapes != ((4 * d, d), (d, 4 * d)):
        hint = ""
        if shapes == ((d, d), (d, d)):
            hint = "\n  Likely mistake: no expansion (d_ff = d_model); the hidden layer is 4× wider than the model."
        fail(
            f"FeedForward(d_model={d}) with no d_ff: expected linear1.weight (32, 8) and linear2.weight (8, 32)"
            f" (nn.Linear stores (out_features, in_features)); got {shapes[0]} and {shapes[1]}{hint}"
        )
    out = m(torch.randn(2, 3, d))
    check(tuple(out.shape) == (2, 3, d), f"FeedForward(8) on (2, 3, 8) should return (2, 3, 8), got {tuple(out.shape)}")


def test_ffn_parameter_count(impl) -> None:
    """FeedForward(d, d_ff) has 2·d·d_ff + d_ff + d parameters (2·d·d_ff with bias=False)"""
    d, d_ff = 8, 24
    for bias, expected in ((True, 2 * d * d_ff + d_ff + d), (False, 2 * d * d_ff)):
        m = impl.FeedForward(d_model=d, d_ff=d_ff, bias=bias)
        n = sum(p.numel() for p in m.parameters())
        if n != expected:
            named = {
                2 * d * d + 2 * d: "no expansion (d_ff = d_model): the d_ff argument is ignored",
                2 * d * d: "no expansion (d_ff = d_model): the d_ff argument is ignored",
                2 * d * 4 * d + 4 * d + d: "d_ff ignored: the hidden width is always 4·d_model",
                2 * d * d_ff + d_ff + d: "bias=False ignored: the linear layers still have biases",
            }
            hint = f"\n  Likely mistake: {named[n]}." if n in named else ""
            shapes = [tuple(p.shape) for p in m.parameters()]
            fail(
                f"FeedForward(d_model={d}, d_ff={d_ff}, bias={bias}): expected {expected} parameters"
                f" (2·{d}·{d_ff}{' + ' + str(d_ff) + ' + ' + str(d) if bias else ''}), got {n} in {shapes}{hint}"
            )


@pytest.mark.points(2)
def test_ffn_is_position_wise(impl) -> None:
    """position-wise: the output at position t depends only on the input at position t"""
    m = impl.FeedForward(d_model=8, d_ff=16).eval()
    x = torch.randn(2, 6, 8)
    out = m(x).detach()
    x2 = x.clone()
    x2[:, 3] += torch.randn(2, 8)  # change position 3 only
    out2 = m(x2).detach()
    others = [0, 1, 2, 4, 5]
    moved = (out2[:, others] - out[:, others]).abs().max().item()
    check(
        moved < 1e-6,
        f"changing the input at position 3 moved the output at other positions by up to {moved:.3g};"
        " the feed-forward network must treat every position on its own (no mixing along the time axis)",
    )
    check(
        (out2[:, 3] - out[:, 3]).abs().max().item() > 1e-3,
        "changing the input at position 3 did not change the output at position 3",
    )
    alone = torch.stack([m(x[:, t : t + 1]).detach()[:, 0] for t in range(6)], dim=1)  # (B, T, d_model)
    check_close(out, alone, what="FeedForward on the whole sequence vs on each position alone (T = 1)", atol=1e-5)


def test_ffn_dropout_on_hidden_layer(impl) -> None:
    """dropout acts on the hidden activations in training mode, and is off in eval mode"""
    m = impl.FeedForward(d_model=8, d_ff=32, dropout=0.5)
    l1, l2 = linears(m)
    x = torch.randn(2, 4, 8)
    m.train()
    torch.manual_seed(123)
    got = m(x)
    with torch.no_grad():
        torch.manual_seed(123)
        expected = composed(x, l1, l2, lambda h: F.dropout(F.gelu(h), 0.5, training=True))
        torch.manual_seed(123)
        after = F.dropout(composed(x, l1, l2), 0.5, training=True)
        plain = composed(x, l1, l2)
    check_close(
        got,
        expected,
        what="FeedForward(8, 32, dropout=0.5) in training mode (same random seed)",
        atol=1e-5,
        rtol=1e-4,
        reference="F.dropout on GELU(linear1(x)), then linear2",
        mistakes={
            "dropout after linear2 instead of on the hidden layer": after,
            "no dropout (the dropout argument is ignored)": plain,
        },
    )
    m.eval()
    check_close(m(x), plain, what="FeedForward(8, 32, dropout=0.5) in eval mode (dropout must be off)", atol=1e-5)


# ---------------------------------------------------------------- devices and precision


@depends_on("gelu (exact)", "gelu (tanh)")
def test_ffn_on_every_device_and_precision(impl, setting) -> None:
    """FeedForward gives the reference result on this device / precision"""
    ref = impl.FeedForward(d_model=16, d_ff=64).eval()
    l1, l2 = linears(ref)
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        expected = composed(x, l1, l2)
    m = setting.module(ref)
    with setting.autocast():
        got = m(setting.tensor(x))
    setting.sync()
    check(got.device.type == setting.device, f"output on {got.device}, expected {setting.device}")
    check(bool(torch.isfinite(got).all()), f"FeedForward on {setting.id} produced NaN or inf")
    check_close(
        got.float().cpu(),
        expected,
        what=f"FeedForward(16, 64) on {setting.id}",
        **setting.tol,
        mistakes={"ReLU where GELU belongs": lambda: composed(x, l1, l2, torch.relu)},
    )
    with setting.autocast():
        g = impl.gelu(setting.tensor(x * 4), approximate="tanh")
    check_close(
        g.float().cpu(), F.gelu(x * 4, approximate="tanh"), what=f"gelu(x, 'tanh') on {setting.id}", **setting.tol
    )
