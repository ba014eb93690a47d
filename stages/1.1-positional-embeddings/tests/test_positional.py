"""Graded checks for stage 1.1 — positional embeddings.

Reference numerics: the formula of "Attention Is All You Need" §3.5, evaluated
here in float64 with Python's ``math`` module, one entry at a time; and
``torch.nn.Embedding`` for the learned table.
"""

from __future__ import annotations

import math

import pytest
import torch

from shared.testing import check, check_close, describe, expect_raises, fail, likely, raised

POSITIONS_FROM_1 = "positions start at 1 (torch.arange(1, T + 1)) instead of 0: row 0 is never used"
T_FROM_BATCH = "T read from x.size(0), the batch axis, instead of x.size(1)"

# ---------------------------------------------------------------- the formula and known mistakes


def formula(max_len: int, d: int, *, swap: bool = False, exponent: str = "2i", layout: str = "interleaved") -> torch.Tensor:
    """PE from the paper, entry by entry (float64), or a named mistake's version of it."""
    pe = torch.empty(max_len, d, dtype=torch.float64)
    for pos in range(max_len):
        for j in range(d):
            i = j // 2 if layout == "interleaved" else j % (d // 2)
            is_sin = (j % 2 == 0) if layout == "interleaved" else (j < d // 2)
            power = {"2i": 2 * i, "i": i, "j": j}[exponent]
            angle = pos / 10000 ** (power / d)
            if swap:
                is_sin = not is_sin
            pe[pos, j] = math.sin(angle) if is_sin else math.cos(angle)
    return pe


def table_mistakes(max_len: int, d: int) -> dict[str, object]:
    return {
        "sin and cos swapped (cos in the even columns, sin in the odd)": lambda: formula(max_len, d, swap=True),
        "exponent i instead of 2i (pos / 10000^(i/d_model))": lambda: formula(max_len, d, exponent="i"),
        "exponent uses the column index j, so a sin column and its cos column get different frequencies": (
            lambda: formula(max_len, d, exponent="j")
        ),
        "halves concatenated (all sin columns, then all cos columns) instead of interleaved": (
            lambda: formula(max_len, d, layout="halves")
        ),
    }


# ---------------------------------------------------------------- Task 1: sinusoidal_table


@pytest.mark.points(2)
def test_table_matches_formula(impl) -> None:
    """sinusoidal_table matches the paper's formula entry by entry"""
    max_len, d = 12, 8
    got = impl.sinusoidal_table(max_len, d)
    check(isinstance(got, torch.Tensor), f"sinusoidal_table must return a torch.Tensor, got {type(got).__name__}")
    check(got.dtype == torch.float32, f"sinusoidal_table must return float32, got {got.dtype}")
    check_close(
        got, formula(max_len, d), what=f"sinusoidal_table({max_len}, {d})", atol=1e-6, rtol=1e-5,
        reference='formula of "Attention Is All You Need" §3.5', mistakes=table_mistakes(max_len, d),
    )


def test_table_interleaves_sin_and_cos(impl) -> None:
    """row 0 is [0, 1, 0, 1, ...]: sin in even columns, cos in odd columns"""
    d = 10
    got = impl.sinusoidal_table(4, d)
    row0 = torch.tensor([0.0, 1.0] * (d // 2))
    check_close(
        got[0], row0, what="sinusoidal_table(4, 10)[0] (position 0: sin 0 = 0, cos 0 = 1)", atol=1e-6,
        mistakes={
            "sin and cos swapped": torch.tensor([1.0, 0.0] * (d // 2)),
            "halves concatenated instead of interleaved": torch.tensor([0.0] * (d // 2) + [1.0] * (d // 2)),
        },
    )
    # Column 2i+1 must be the cos of the same angle as column 2i: sin^2 + cos^2 = 1 per pair.
    big = impl.sinusoidal_table(50, 16)
    pair_norm = big[:, 0::2] ** 2 + big[:, 1::2] ** 2
    check_close(pair_norm, torch.ones_like(pair_norm), what="sin^2 + cos^2 of each column pair (2i, 2i+1)", atol=1e-5,
                mistakes={"halves concatenated instead of interleaved": lambda: (lambda f: f[:, 0::2] ** 2 + f[:, 1::2] ** 2)(formula(50, 16, layout="halves"))})


def test_table_shape_dtype_bounds(impl) -> None:
    """the table has shape (max_len, d_model), is float32 and stays within [-1, 1]"""
    got = impl.sinusoidal_table(100, 32)
    check(tuple(got.shape) == (100, 32), f"sinusoidal_table(100, 32): expected shape (100, 32), got {tuple(got.shape)}")
    check(got.dtype == torch.float32, f"expected float32, got {got.dtype}")
    check(bool(torch.isfinite(got).all()), "the table contains NaN or inf")
    lo, hi = float(got.min()), float(got.max())
    check(-1.0 <= lo and hi <= 1.0, f"every entry is a sin or a cos, so it lies in [-1, 1]; got min {lo:.4g}, max {hi:.4g}")
    check(hi > 0.99 and lo < -0.99, f"with 100 positions the fastest columns swing through ±1; got min {lo:.4g}, max {hi:.4g}")


def test_dot_product_depends_only_on_offset(impl) -> None:
    """PE(p) · PE(p+k) depends only on the offset k, not on p"""
    pe = impl.sinusoidal_table(64, 16).double()
    norms = (pe * pe).sum(dim=1)  # (64,) PE(p)·PE(p) = sum_i (sin^2 + cos^2) = d_model / 2 for every p
    check_close(norms, torch.full((64,), 8.0), what="PE(p)·PE(p) for sinusoidal_table(64, 16) (k = 0: each sin/cos pair gives 1)",
                atol=1e-4)
    for k in (1, 3, 7):
        dots = (pe[: 64 - k] * pe[k:]).sum(dim=1)  # (64-k,) one dot product per p
        spread = float(dots.max() - dots.min())
        if spread > 1e-4:
            wrong = formula(64, 16, exponent="j")
            wrong_dots = (wrong[: 64 - k] * wrong[k:]).sum(dim=1)
            hint = ""
            if torch.allclose(dots, wrong_dots, atol=1e-4):
                hint = likely("exponent uses the column index j, so a sin column and its cos column get different frequencies")
            fail(
                f"PE(p)·PE(p+{k}) should be the same for every p (it equals sum_i cos(k·w_i));"
                f" it ranges over [{float(dots.min()):.4f}, {float(dots.max()):.4f}]{hint}"
            )


def test_odd_d_model_raises(impl) -> None:
    """an odd d_model raises ValueError (columns come in sin/cos pairs)"""
    expect_raises(ValueError, impl.sinusoidal_table, 10, 7, what="sinusoidal_table(10, 7)")


# ---------------------------------------------------------------- Task 2: SinusoidalPositionalEncoding


def test_encoding_adds_table(impl) -> None:
    """SinusoidalPositionalEncoding(x) = x + PE[:T] for each batch element"""
    m = impl.SinusoidalPositionalEncoding(d_model=8, max_len=20)
    m.eval()
    x = torch.randn(3, 11, 8)
    got = m(x)
    expected = x + formula(20, 8)[:11].float()
    check_close(
        got, expected, what="SinusoidalPositionalEncoding(8, max_len=20) on x of shape (3, 11, 8)", atol=1e-5,
        reference="x + the paper's table", mistakes={
            "returned the table without adding x": lambda: formula(20, 8)[:11].float().expand(3, 11, 8),
            "added the table of the wrong length (PE[:max_len] sliced along the batch)": lambda: x + formula(20, 8)[:3, None, :].float(),
        },
    )


def test_encoding_dropout_in_training_only(impl) -> None:
    """SinusoidalPositionalEncoding applies its dropout to x + PE in training mode only"""
    p = 0.5
    m = impl.SinusoidalPositionalEncoding(d_model=8, max_len=20, dropout=p)
    check(isinstance(getattr(m, "dropout", None), torch.nn.Dropout), "SinusoidalPositionalEncoding needs self.dropout = nn.Dropout(dropout)")
    x = torch.randn(4, 10, 8)
    summed = x + formula(20, 8)[:10].float()
    m.eval()
    check_close(m(x), summed, what="eval-mode output with dropout=0.5 (dropout is off in eval mode)", atol=1e-5)
    m.train()
    torch.manual_seed(0)
    got = m(x)
    dropped = got.abs() < 1e-12
    check(bool(dropped.any()), "in training mode with dropout=0.5 about half of the outputs should be zero, but none is:"
          " (return self.dropout(x + PE[:T]), as the paper does after the sum)"
          + likely("the dropout is never applied: self.dropout defined but not called in forward"))
    kept = ~dropped
    check_close(got[kept], summed[kept] / (1 - p), what="kept outputs in training mode (dropout scales them by 1/(1-p))", atol=1e-5)


@pytest.mark.points(2)
def test_table_is_a_buffer_not_a_parameter(impl) -> None:
    """the table is a buffer named "pe": absent from parameters(), present in state_dict()"""
    m = impl.SinusoidalPositionalEncoding(d_model=8, max_len=16)
    params = dict(m.named_parameters())
    if params:
        shapes = {k: tuple(v.shape) for k, v in params.items()}
        fail(
            f"SinusoidalPositionalEncoding has trainable parameters {shapes}; the table is fixed, so an optimizer must"
            " never see it.\n  Likely mistake: the table registered as a Parameter (nn.Parameter) instead of"
            ' self.register_buffer("pe", table).'
        )
    buffers = dict(m.named_buffers())
    check("pe" in buffers, f"expected a buffer named 'pe'; buffers are {sorted(buffers)} (use self.register_buffer)")
    check(tuple(buffers["pe"].shape) == (16, 8), f"buffer 'pe' should have shape (16, 8), got {tuple(buffers['pe'].shape)}")
    check("pe" in m.state_dict(), "the buffer should be saved in state_dict (register it as persistent)")


def test_buffer_follows_to(impl) -> None:
    """the table follows .to(): dtype and device move with the module"""
    m = impl.SinusoidalPositionalEncoding(d_model=8, max_len=16)
    m = m.to(torch.float64)
    check(m.pe.dtype == torch.float64, f"after .to(torch.float64) the table is {m.pe.dtype}: it is not a registered buffer")
    out = m(torch.zeros(1, 4, 8, dtype=torch.float64))
    check(out.dtype == torch.float64, f"float64 input through a float64 module gave {out.dtype}")
    m = m.to("meta")  # a device that exists everywhere: no memory, just shapes
    check(m.pe.device.type == "meta", f"after .to('meta') the table is on {m.pe.device}: it does not follow the module")


def test_encoding_too_long_raises(impl) -> None:
    """a sequence longer than max_len raises ValueError naming max_len"""
    m = impl.SinusoidalPositionalEncoding(d_model=8, max_len=5)
    expect_raises(ValueError, m, torch.zeros(2, 6, 8), what="SinusoidalPositionalEncoding(max_len=5) on T=6", match="max_len")


# ---------------------------------------------------------------- Task 3: LearnedPositionalEmbedding


@pytest.mark.points(2)
def test_learned_embedding_adds_rows_and_learns(impl) -> None:
    """LearnedPositionalEmbedding adds rows 0..T-1 of one trainable table, and only those rows get gradients"""
    m = impl.LearnedPositionalEmbedding(d_model=6, max_len=10)
    emb = getattr(m, "embedding", None)
    check(isinstance(emb, torch.nn.Embedding) and tuple(emb.weight.shape) == (10, 6),
          f"LearnedPositionalEmbedding(6, 10).embedding must be nn.Embedding(max_len, d_model) = (10, 6);"
          f" got {describe(emb) if torch.is_tensor(emb) else repr(emb)[:120]}."
          " Stage 1.6 and Part 2 copy weights into .embedding.weight, so the name is part of the contract."
          + (likely("the learned table kept as a plain tensor, not an nn.Parameter (no gradient reaches it, it is not saved)")
             if torch.is_tensor(emb) and not isinstance(emb, torch.nn.Parameter) else "")
          + (likely("the nn.Embedding stored under another name than `embedding`")
             if emb is None and any(isinstance(c, torch.nn.Embedding) for c in m.children()) else ""))
    params = list(m.parameters())
    n = sum(p.numel() for p in params)
    check(n == 10 * 6, f"expected one (max_len, d_model) = (10, 6) table, {60} parameters; got {n} in {[tuple(p.shape) for p in params]}")
    table = emb.weight
    x = torch.randn(2, 4, 6)
    try:
        out = m(x)
    except NotImplementedError:
        raise
    except RuntimeError as exc:
        square = torch.randn(4, 4, 6)  # B == T: the probe on which T from the batch axis runs
        try:
            m(square)
            names = [T_FROM_BATCH]
        except Exception:  # noqa: BLE001 - the probe only decides whether the name fits
            names = []
        fail(raised(exc, "LearnedPositionalEmbedding(6, 10) on x (B=2, T=4, 6)", *names))
    check_close(out, x + table.detach()[:4], what="LearnedPositionalEmbedding(6, 10) on x of shape (2, 4, 6)",
                reference="x + table[:T]", mistakes={"returned the rows without adding x": lambda: table.detach()[:4].expand(2, 4, 6),
                                                     POSITIONS_FROM_1: lambda: x + table.detach()[1:5]})
    out.sum().backward()
    check(table.grad is not None, "the learned table received no gradient: is it an nn.Parameter / nn.Embedding?")
    expected_grad = torch.zeros(10, 6)
    expected_grad[:4] = 2.0  # d(sum)/d(row t) = batch size for t < T
    check_close(table.grad, expected_grad, what="gradient of out.sum() w.r.t. the table (rows >= T must get none)", atol=1e-6)


def test_learned_too_long_raises(impl) -> None:
    """a sequence longer than max_len raises ValueError (there is no row to learn from)"""
    m = impl.LearnedPositionalEmbedding(d_model=4, max_len=3)
    expect_raises((ValueError, IndexError), m, torch.zeros(1, 5, 4), what="LearnedPositionalEmbedding(max_len=3) on T=5")


# ---------------------------------------------------------------- Task 4: TokenEmbedding


def test_token_embedding_scaled_by_sqrt_d_model(impl) -> None:
    """TokenEmbedding looks up each id and multiplies by sqrt(d_model)"""
    vocab, d = 11, 16
    m = impl.TokenEmbedding(vocab, d)
    emb = getattr(m, "embedding", None)
    check(isinstance(emb, torch.nn.Embedding) and tuple(emb.weight.shape) == (vocab, d),
          f"TokenEmbedding(11, 16) must keep its table as self.embedding = nn.Embedding(vocab_size, d_model), named `embedding`;"
          f" got {describe(emb) if torch.is_tensor(emb) else repr(emb)[:120]}. Stage 1.6 (--deps mine) and Part 2 copy weights"
          " into .embedding.weight, so the name is part of the contract."
          + (likely("the nn.Embedding stored under another name than `embedding`")
             if emb is None and any(isinstance(c, torch.nn.Embedding) for c in m.children()) else ""))
    tables = [p for p in m.parameters() if tuple(p.shape) == (vocab, d)]
    check(len(tables) == 1, f"expected one (vocab_size, d_model) = ({vocab}, {d}) table; got {[tuple(p.shape) for p in m.parameters()]}")
    w = tables[0].detach()
    ids = torch.tensor([[1, 5, 5, 0], [10, 2, 3, 4]])
    got = m(ids)
    check_close(got, w[ids] * math.sqrt(d), what="TokenEmbedding(11, 16) on ids of shape (2, 4)",
                reference="torch.nn.Embedding lookup times sqrt(d_model), §3.4", mistakes={
                    "no scaling by sqrt(d_model)": w[ids],
                    "scaled by d_model instead of sqrt(d_model)": w[ids] * d,
                    "divided by sqrt(d_model) instead of multiplied": w[ids] / math.sqrt(d),
                })


# ---------------------------------------------------------------- devices and precision


def test_positions_on_every_device_and_precision(impl, setting) -> None:
    """both position modules give the reference result on this device / precision"""
    x = torch.randn(2, 9, 16)
    sin_m = setting.module(impl.SinusoidalPositionalEncoding(d_model=16, max_len=32).eval())
    learned = setting.module(impl.LearnedPositionalEmbedding(d_model=16, max_len=32))
    emb = getattr(learned, "embedding", None)
    check(isinstance(emb, torch.nn.Embedding), f"LearnedPositionalEmbedding.embedding must be an nn.Embedding, got {type(emb).__name__}")
    table = emb.weight
    with setting.autocast():
        got_sin = sin_m(setting.tensor(x))
        got_learned = learned(setting.tensor(x))
    setting.sync()
    check(got_sin.device.type == setting.device, f"output on {got_sin.device}, expected {setting.device}")
    check_close(got_sin.float().cpu(), x + formula(32, 16)[:9].float(), what=f"SinusoidalPositionalEncoding on {setting.id}", **setting.tol)
    rows = table.detach().float().cpu()
    check_close(got_learned.float().cpu(), x + rows[:9], what=f"LearnedPositionalEmbedding on {setting.id}", **setting.tol,
                mistakes={POSITIONS_FROM_1: x + rows[1:10]})
