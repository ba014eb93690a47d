"""Graded checks for stage 1.2 — self-attention from first principles, in NumPy.

Reference numerics, all in float64 and none of them from the graded file:
  - ``torch.softmax`` for softmax;
  - ``torch.nn.functional.scaled_dot_product_attention`` for attention outputs. It uses the
    opposite boolean-mask convention (True = *may* attend), so the tests pass it ``~mask``;
  - the paper's formula softmax(Q K^T / sqrt(d_k)) written out in torch for the weights
    (F.scaled_dot_product_attention does not return them);
  - for the lesson's worked example, Q, K, V and the scores are small integers written out
    below (they are exact), and the weights and output come from the torch references.
Named mistakes are recognised by computing each mistake's output with the same formulas.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared.testing import check, check_close, check_shape, fail, likely, named_mistake, raised

# ---------------------------------------------------------------- the names hints use (the lesson lists them)

WRONG_AXIS = "softmax over the wrong axis (over the queries, axis -2, instead of over the keys, axis -1)"
NO_KEEPDIMS = "sum without keepdims=True (each entry divided by another row's sum)"
AXIS_IGNORED = "the axis argument ignored (always normalised over the last axis)"
NO_MAX = "no max subtraction (exp overflows to inf, and inf / inf = NaN)"
GLOBAL_MAX = "subtracted the max of the whole array instead of the max along the axis (small rows underflow to 0 / 0)"
D_K = "scaled by d_k instead of sqrt(d_k)"
NO_SCALE = "no scaling by sqrt(d_k)"
D_MODEL = "scaled by sqrt(d_model) instead of sqrt(d_k)"
AFTER = "the mask applied after the softmax (blocked weights zeroed afterwards, so rows no longer sum to 1)"
ZERO_FILL = "blocked scores filled with 0 instead of -inf (exp(0) = 1, so blocked keys still get weight)"
INVERTED = (
    "mask convention inverted (True treated as 'may attend', F.scaled_dot_product_attention's convention;"
    " in this course True = blocked)"
)
NAN_ROW = "fully-masked row not special-cased (softmax of a row of -inf is 0 / 0 = NaN)"
FINITE_FILL = "blocked scores filled with a large finite number (e.g. -1e9): a fully-masked row becomes uniform"
CAUSAL_TRIL = "lower triangle instead of upper (True on and below the diagonal: the 'may attend' pattern)"
CAUSAL_DIAG = "diagonal blocked too (np.triu(..., k=0)): a token may not attend to itself"
CAUSAL_PAST = "past blocked instead of the future (True below the diagonal)"
ALWAYS_CAUSAL = "a causal mask applied when mask is None (self-attention is not always causal)"
NO_WV = "values not projected (V = x instead of x W_v)"

# ---------------------------------------------------------------- the lesson's worked example (README.md)

X = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]], dtype=np.float64)  # (T=3, d_model=4)
W_Q = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 1, 0]], dtype=np.float64)  # (4, d_k=4)
W_K = np.array([[0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=np.float64)  # (4, d_k=4)
W_V = np.array([[1, 0, 2, 0], [0, 1, 0, 2], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=np.float64)  # (4, d_v=4)
# Worked by hand (integers, exact): Q = X W_q, K = X W_k, V = X W_v, scores = Q K^T / sqrt(4).
Q_EX = np.array([[1, 0, 1, 1], [0, 2, 1, 0], [1, 1, 0, 1]], dtype=np.float64)
K_EX = np.array([[0, 1, 1, 0], [2, 0, 0, 1], [1, 1, 0, 1]], dtype=np.float64)
V_EX = np.array([[1, 0, 3, 0], [1, 1, 0, 2], [1, 1, 2, 2]], dtype=np.float64)
SCORES_EX = np.array([[1, 3, 2], [3, 0, 2], [1, 3, 3]], dtype=np.float64) / 2.0
CAUSAL_EX = np.array([[False, True, True], [False, False, True], [False, False, False]])  # True = blocked


# ---------------------------------------------------------------- references (torch, float64) and mistakes


def _t(a: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def ref_softmax(x: Any, axis: int = -1) -> np.ndarray:
    return torch.softmax(_t(x), dim=axis).numpy()


def formula(
    q: Any, k: Any, v: Any, mask: Any = None, *, scale: float | None = None, dim: int = -1,
    fill: float = -math.inf, after: bool = False, invert: bool = False, empty_rows: str = "zero",
) -> tuple[np.ndarray, np.ndarray]:
    """softmax(Q K^T / scale) V in torch float64: the paper's formula, or a named mistake's version of it.

    scale: default sqrt(d_k). dim: the softmax axis. fill: what blocked scores become.
    after: zero the blocked weights after the softmax instead. invert: True means "may attend".
    empty_rows: what a query with every key blocked gets: "zero" (the course's rule) or "softmax"
    (whatever the softmax gives: NaN for -inf, uniform for a finite fill).
    """
    qt, kt, vt = _t(q), _t(k), _t(v)
    scores = qt @ kt.transpose(-2, -1) / (math.sqrt(qt.shape[-1]) if scale is None else scale)  # (..., Tq, Tk)
    blocked = None
    if mask is not None:
        blocked = torch.as_tensor(np.asarray(mask, dtype=bool))
        blocked = ~blocked if invert else blocked
        blocked = blocked.expand(scores.shape)
        if not after:
            scores = scores.masked_fill(blocked, fill)
    weights = torch.softmax(scores, dim=dim)
    if blocked is not None:
        if after:
            weights = weights.masked_fill(blocked, 0.0)
        elif empty_rows == "zero":
            weights = weights.masked_fill(blocked.all(dim=-1, keepdim=True), 0.0)
    return (weights @ vt).numpy(), weights.numpy()


def oracle(q: Any, k: Any, v: Any, mask: Any = None) -> np.ndarray:
    """The attention output from torch.nn.functional.scaled_dot_product_attention (float64).

    F.scaled_dot_product_attention's boolean attn_mask means True = MAY attend: invert ours.
    """
    allowed = None if mask is None else ~torch.as_tensor(np.asarray(mask, dtype=bool))
    return F.scaled_dot_product_attention(_t(q), _t(k), _t(v), attn_mask=allowed).numpy()


def attention_mistakes(q: Any, k: Any, v: Any, mask: Any = None, *, part: int) -> dict[str, Callable[[], Any]]:
    """Each named mistake's output (part=0) or weights (part=1) on this input."""

    def m(**kw: Any) -> Callable[[], Any]:
        return lambda: formula(q, k, v, mask, **kw)[part]

    d_k = np.shape(q)[-1]
    out: dict[str, Callable[[], Any]] = {
        D_K: m(scale=float(d_k)),
        NO_SCALE: m(scale=1.0),
        WRONG_AXIS: m(dim=-2),
    }
    if mask is not None:
        out.update({
            AFTER: m(after=True),
            ZERO_FILL: m(fill=0.0),
            INVERTED: m(invert=True),
            INVERTED + "; the row it blocks completely came out NaN": m(invert=True, empty_rows="softmax"),
        })
    return out


K_T = "k.T (or np.transpose(k)) on a batched array: it reverses EVERY axis, not just the last two; use np.swapaxes(k, -1, -2)"
IN_PLACE = "softmax modified its input in place (x -= ... or np.exp(x, out=x)); compute into a new array, e.g. e = np.exp(x - x_max)"


def attend(fn: Callable[..., Any], *args: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Call an attention function and require it to return (output, weights).

    NumPy's matmul error on batched inputs is explained, and k.T named when the same call runs
    on one batch element (2-D), the probe on which k.T is right.
    """
    try:
        result = fn(*args)
    except NotImplementedError:
        raise
    except ValueError as exc:
        batched = [a for a in args if isinstance(a, np.ndarray) and a.ndim > 2]
        if "matmul" not in str(exc) or not batched:
            raise
        try:
            fn(*(a.reshape(-1, *a.shape[-2:])[0] if isinstance(a, np.ndarray) and a.ndim > 2 else a for a in args))
            names = [K_T]
        except Exception:  # noqa: BLE001 - the probe only decides whether the name fits
            names = []
        shapes = ", ".join(str(a.shape) for a in args if isinstance(a, np.ndarray))
        fail(raised(exc, f"{what} on batched inputs of shapes {shapes}", *names))
    if not (isinstance(result, tuple) and len(result) == 2):
        fail(f"{what} must return a tuple (output, weights); got {type(result).__name__}")
    return result


def mixed_mask(rng: np.random.Generator, tq: int, tk: int) -> np.ndarray:
    """A random (tq, tk) bool mask in which every row has a blocked key and an allowed key."""
    rows = np.arange(tq)
    mask = rng.random((tq, tk)) < 0.4
    mask[rows, (rows + 1) % tk] = True  # tk >= 2: each row blocks one key ...
    mask[rows, rows % tk] = False  # ... and allows another
    return mask


# ---------------------------------------------------------------- Task 1: softmax


def test_softmax_matches_reference(impl) -> None:
    """softmax matches torch.softmax along the last axis and leaves its input unchanged"""
    x = np.random.default_rng(1).normal(0.0, 2.0, size=(4, 4))
    x_before = x.copy()
    got = impl.softmax(x)
    check(isinstance(got, np.ndarray), f"softmax must return a NumPy array, got {type(got).__name__}")
    if not np.array_equal(x, x_before):  # first: every comparison below needs the caller's x as it was
        fail(
            "softmax changed its input x: after the call x differs from before (largest change"
            f" {float(np.max(np.abs(x - x_before))):.4g})." + likely(IN_PLACE)
        )
    x = x_before
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    check_close(
        got, ref_softmax(x), what="softmax(x) of x with shape (4, 4)", atol=1e-10, reference="torch.softmax(x, dim=-1)",
        mistakes={
            WRONG_AXIS: lambda: ref_softmax(x, axis=0),
            NO_KEEPDIMS: lambda: e / e.sum(axis=-1),  # (4, 4) / (4,): divides column j by row j's sum
        },
    )


def test_softmax_axis_argument(impl) -> None:
    """softmax(x, axis=1) normalises along axis 1 of a 3-D array"""
    x = np.random.default_rng(2).normal(size=(2, 3, 4))
    got = impl.softmax(x, axis=1)
    check_close(
        got, ref_softmax(x, axis=1), what="softmax(x, axis=1) of x with shape (2, 3, 4)", atol=1e-10,
        reference="torch.softmax(x, dim=1)", mistakes={AXIS_IGNORED: lambda: ref_softmax(x, axis=-1)},
    )


@pytest.mark.points(2)
def test_softmax_large_logits_stay_finite(impl) -> None:
    """large logits stay finite: softmax(x + 1000) = softmax(x), even when rows differ by +-800"""
    x = np.random.default_rng(3).normal(size=(3, 5))

    def naive(z: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)

    def global_max(z: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            e = np.exp(z - z.max())
            return e / e.sum(axis=-1, keepdims=True)

    shifted = x + 1000.0
    check_close(
        impl.softmax(shifted), ref_softmax(x), what="softmax(x + 1000) (should equal softmax(x))", atol=1e-10,
        reference="torch.softmax(x, dim=-1)", mistakes={NO_MAX: lambda: naive(shifted)},
    )
    rows = x + np.array([[0.0], [800.0], [-800.0]])  # (3, 5): each row shifted by its own amount
    check_close(
        impl.softmax(rows), ref_softmax(x), what="softmax of rows shifted by 0, +800 and -800 (each row = softmax(x))",
        atol=1e-10, reference="torch.softmax(x, dim=-1)",
        mistakes={GLOBAL_MAX: lambda: global_max(rows), NO_MAX: lambda: naive(rows)},
    )


# ---------------------------------------------------------------- Task 2: scaled_dot_product_attention


@pytest.mark.points(2)
def test_attention_worked_example(impl) -> None:
    """the lesson's worked example: attention over its Q, K, V gives its weights and output"""
    out, w = attend(impl.scaled_dot_product_attention, Q_EX, K_EX, V_EX, what="scaled_dot_product_attention")
    ref_w = torch.softmax(_t(SCORES_EX), dim=-1).numpy()  # scores = Q K^T / sqrt(4), worked by hand
    check_close(
        w, ref_w, what="weights of the worked example (softmax of the scaled scores)", atol=1e-8,
        reference="softmax(Q K^T / sqrt(d_k)), scores worked by hand",
        mistakes=attention_mistakes(Q_EX, K_EX, V_EX, part=1),
    )
    check_close(
        out, oracle(Q_EX, K_EX, V_EX), what="output of the worked example (weights @ V)", atol=1e-8,
        reference="torch.nn.functional.scaled_dot_product_attention",
        mistakes=attention_mistakes(Q_EX, K_EX, V_EX, part=0),
    )


def test_attention_worked_example_causal(impl) -> None:
    """the lesson's worked example with the causal mask: its masked weights and output"""
    args = (Q_EX, K_EX, V_EX, CAUSAL_EX)
    out, w = attend(impl.scaled_dot_product_attention, *args, what="scaled_dot_product_attention")
    ref_w = torch.softmax(_t(SCORES_EX).masked_fill(torch.as_tensor(CAUSAL_EX), -math.inf), dim=-1).numpy()
    check_close(
        w, ref_w, what="causal weights of the worked example", atol=1e-8,
        reference="softmax of the scaled scores with blocked entries set to -inf",
        mistakes=attention_mistakes(*args, part=1),
    )
    check_close(
        out, oracle(*args), what="causal output of the worked example", atol=1e-8,
        reference="torch.nn.functional.scaled_dot_product_attention with attn_mask = ~mask",
        mistakes=attention_mistakes(*args, part=0),
    )


def test_weights_rows_sum_to_one(impl) -> None:
    """each row of the attention weights sums to 1, with and without a mask"""
    rng = np.random.default_rng(4)
    q, k, v = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6, 2))
    for mask in (None, mixed_mask(rng, 4, 6)):
        label = "no mask" if mask is None else "a (4, 6) mask"
        _, w = attend(impl.scaled_dot_product_attention, q, k, v, mask, what="scaled_dot_product_attention")
        check_shape(w, (2, 4, 6), what=f"weights for q (2, 4, 3), k (2, 6, 3), {label}")
        mistaken_w = attention_mistakes(q, k, v, mask, part=1)
        sums = {name: (lambda f=f: np.sum(f(), axis=-1)) for name, f in mistaken_w.items()}
        check_close(
            np.sum(w, axis=-1), np.ones((2, 4)), what=f"row sums of the weights (over the keys), {label}", atol=1e-8,
            mistakes=sums,
        )


def test_blocked_positions_get_zero_weight(impl) -> None:
    """blocked keys get exactly zero weight (a padding mask of shape (B, 1, Tk) broadcasts)"""
    rng = np.random.default_rng(5)
    q, k, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 2))
    pad = np.zeros((2, 1, 5), dtype=bool)  # (B, 1, Tk): the same keys are blocked for every query
    pad[0, 0, 3:] = True  # sequence 0 has 3 real tokens and 2 of padding
    pad[1, 0, 4:] = True  # sequence 1 has 4 real tokens and 1 of padding
    _, w = attend(impl.scaled_dot_product_attention, q, k, v, pad, what="scaled_dot_product_attention")
    check_shape(w, (2, 3, 5), what="weights for q (2, 3, 4), k (2, 5, 4), padding mask (2, 1, 5)")
    blocked = np.broadcast_to(pad, (2, 3, 5))
    leaked = np.asarray(w)[blocked]
    if np.any(leaked != 0):
        name = named_mistake(w, attention_mistakes(q, k, v, pad, part=1), atol=1e-8)
        likely = f"\n  Likely mistake: {name} (your output matches what that mistake produces)." if name else ""
        idx = tuple(int(i) for i in np.argwhere(blocked & (np.asarray(w) != 0))[0])
        fail(
            f"{int(np.count_nonzero(leaked))} of {leaked.size} blocked entries of the weights are not 0"
            f" (first at index {idx}: {float(np.asarray(w)[idx]):.4g}); a blocked key must get exactly 0 weight"
            " (exp(-inf) = 0)." + likely
        )
    check_close(w, formula(q, k, v, pad)[1], what="weights with a padding mask", atol=1e-8,
                reference="softmax(Q K^T / sqrt(d_k)) with blocked scores = -inf",
                mistakes=attention_mistakes(q, k, v, pad, part=1))


def test_causal_first_row_is_v0(impl) -> None:
    """with the causal mask the first token sees only itself: its output is exactly V[0]"""
    rng = np.random.default_rng(6)
    q, k, v = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    mask = np.triu(np.ones((5, 5), dtype=bool), k=1)  # True above the diagonal: the future is blocked
    out, _ = attend(impl.scaled_dot_product_attention, q, k, v, mask, what="scaled_dot_product_attention")
    check_shape(out, (5, 3), what="output for q (5, 4), k (5, 4), v (5, 3)")
    row0 = {name: (lambda f=f: f()[0]) for name, f in attention_mistakes(q, k, v, mask, part=0).items()}
    check_close(out[0], v[0], what="output[0] under the causal mask (should be V[0])", atol=1e-10, mistakes=row0)


@pytest.mark.points(2)
def test_matches_torch_sdpa(impl) -> None:
    """matches F.scaled_dot_product_attention on (B, h, T, d) batches, masked and unmasked"""
    rng = np.random.default_rng(7)
    q, k, v = rng.normal(size=(2, 2, 3, 4)), rng.normal(size=(2, 2, 5, 4)), rng.normal(size=(2, 2, 5, 3))
    for mask in (None, mixed_mask(rng, 3, 5)):
        label = "no mask" if mask is None else "a (3, 5) mask broadcast over (B, h)"
        out, w = attend(impl.scaled_dot_product_attention, q, k, v, mask, what="scaled_dot_product_attention")
        check_close(
            out, oracle(q, k, v, mask), what=f"output for q (2, 2, 3, 4), k (2, 2, 5, 4), v (2, 2, 5, 3), {label}",
            atol=1e-8, reference="torch.nn.functional.scaled_dot_product_attention (attn_mask = ~mask)",
            mistakes=attention_mistakes(q, k, v, mask, part=0),
        )
        check_close(
            w, formula(q, k, v, mask)[1], what=f"weights, {label}", atol=1e-8,
            reference="softmax(Q K^T / sqrt(d_k)) in torch", mistakes=attention_mistakes(q, k, v, mask, part=1),
        )


def test_fully_masked_row_is_zero(impl) -> None:
    """a query whose keys are all blocked gets zero weights and a zero output: no NaN, no warning"""
    rng = np.random.default_rng(8)
    q, k, v = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    mask = mixed_mask(rng, 4, 4)
    mask[1] = True  # query 1 may attend to nothing
    with warnings.catch_warnings(record=True) as caught, np.errstate(divide="warn", over="warn", invalid="warn"):
        warnings.simplefilter("always")
        out, w = attend(impl.scaled_dot_product_attention, q, k, v, mask, what="scaled_dot_product_attention")
    exp_out, exp_w = formula(q, k, v, mask)
    for part, got, expected, name in ((1, w, exp_w, "weights"), (0, out, exp_out, "output")):
        mistakes = {
            NAN_ROW: lambda part=part: formula(q, k, v, mask, empty_rows="softmax")[part],
            FINITE_FILL: lambda part=part: formula(q, k, v, mask, fill=-1e9, empty_rows="softmax")[part],
            **attention_mistakes(q, k, v, mask, part=part),
        }
        check_close(got, expected, what=f"{name} with query 1 fully masked (row 1 should be all 0)", atol=1e-8,
                    reference="softmax(Q K^T / sqrt(d_k)) on the other rows; the course's rule (zeros) on row 1",
                    mistakes=mistakes)
    runtime = [str(c.message) for c in caught if issubclass(c.category, RuntimeWarning)]
    check(
        not runtime,
        f"the right numbers came back, but NumPy warned: {runtime[:2]}.\n  A fully-masked row computed -inf - (-inf)"
        " or 0 / 0 on the way; keep those rows out of the softmax (e.g. give them finite scores, then zero their"
        " weights) instead of repairing NaN afterwards.",
    )


# ---------------------------------------------------------------- Task 3: causal_mask


def test_causal_mask_values(impl) -> None:
    """causal_mask(T) is a (T, T) bool array, True exactly above the diagonal (the future)"""
    for T in (5, 1):
        got = impl.causal_mask(T)
        check(isinstance(got, np.ndarray), f"causal_mask({T}) must return a NumPy array, got {type(got).__name__}")
        check_shape(got, (T, T), what=f"causal_mask({T})")
        check(
            got.dtype == np.bool_,
            f"causal_mask({T}) must be a bool array (True = blocked), got dtype {got.dtype}.\n  Likely mistake: a float"
            " mask instead of bool (np.triu(np.ones((T, T))) is float64: pass dtype=bool to np.ones).",
        )
        i, j = np.indices((T, T))
        check_close(
            got.astype(np.float64), (j > i).astype(np.float64), what=f"causal_mask({T}) (1 = True = blocked)", atol=0,
            reference="mask[i, j] = (j > i)", mistake_atol=0,
            mistakes={
                CAUSAL_DIAG: (j >= i).astype(np.float64),
                CAUSAL_TRIL: (j <= i).astype(np.float64),
                CAUSAL_PAST: (j < i).astype(np.float64),
            },
        )


# ---------------------------------------------------------------- Task 4: self_attention


def self_attention_mistakes(x: Any, w_q: Any, w_k: Any, w_v: Any, mask: Any = None, *, part: int) -> dict[str, Any]:
    xq, xk, xv = x @ w_q, x @ w_k, x @ w_v
    out = attention_mistakes(xq, xk, xv, mask, part=part)
    out[D_MODEL] = lambda: formula(xq, xk, xv, mask, scale=math.sqrt(np.shape(x)[-1]))[part]
    out[NO_WV] = lambda: formula(xq, xk, x, mask)[part]
    return out


@pytest.mark.points(2)
def test_self_attention_worked_example(impl) -> None:
    """the lesson's worked example: self_attention(X, W_q, W_k, W_v) gives its weights and output"""
    ref_w = torch.softmax(_t(SCORES_EX), dim=-1).numpy()
    ref_w_causal = torch.softmax(_t(SCORES_EX).masked_fill(torch.as_tensor(CAUSAL_EX), -math.inf), dim=-1).numpy()
    for mask, exp_w, label in ((None, ref_w, "no mask"), (CAUSAL_EX, ref_w_causal, "causal mask")):
        out, w = attend(impl.self_attention, X, W_Q, W_K, W_V, mask, what="self_attention")
        check_close(w, exp_w, what=f"weights of self_attention on the worked example, {label}", atol=1e-8,
                    reference="softmax(Q K^T / sqrt(d_k)) with Q, K worked by hand",
                    mistakes=self_attention_mistakes(X, W_Q, W_K, W_V, mask, part=1))
        check_close(out, oracle(Q_EX, K_EX, V_EX, mask), atol=1e-8,
                    what=f"output of self_attention on the worked example, {label}",
                    reference="torch.nn.functional.scaled_dot_product_attention on the lesson's Q, K, V",
                    mistakes=self_attention_mistakes(X, W_Q, W_K, W_V, mask, part=0))


def test_self_attention_batch(impl) -> None:
    """self_attention on a batch with d_model=6, d_k=4, d_v=3 matches torch"""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 5, 6))
    w_q, w_k, w_v = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    out, w = attend(impl.self_attention, x, w_q, w_k, w_v, what="self_attention")
    check_close(
        out, oracle(x @ w_q, x @ w_k, x @ w_v), what="self_attention output for x (2, 5, 6)", atol=1e-8,
        reference="torch.nn.functional.scaled_dot_product_attention(x W_q, x W_k, x W_v)",
        mistakes=self_attention_mistakes(x, w_q, w_k, w_v, part=0),
    )
    check_shape(w, (2, 5, 5), what="self_attention weights for x (2, 5, 6)")


def test_self_attention_permutation_equivariant(impl) -> None:
    """without a mask, shuffling the tokens shuffles the output and the weights the same way"""
    rng = np.random.default_rng(10)
    x = rng.normal(size=(6, 4))
    w_q, w_k, w_v = rng.normal(size=(4, 4)), rng.normal(size=(4, 4)), rng.normal(size=(4, 2))
    perm = np.array([3, 0, 5, 1, 4, 2])
    out, w = attend(impl.self_attention, x, w_q, w_k, w_v, what="self_attention")
    out_p, w_p = attend(impl.self_attention, x[perm], w_q, w_k, w_v, what="self_attention")
    causal = np.triu(np.ones((6, 6), dtype=bool), k=1)
    xp = x[perm]
    check_close(
        out_p, np.asarray(out)[perm], what="self_attention(x[perm]) vs self_attention(x)[perm]", atol=1e-10,
        reference="your own output on the unshuffled tokens",
        mistakes={ALWAYS_CAUSAL: lambda: formula(xp @ w_q, xp @ w_k, xp @ w_v, causal)[0]},
    )
    check_close(w_p, np.asarray(w)[perm][:, perm], what="weights of the shuffled tokens vs W[perm][:, perm]",
                atol=1e-10, reference="your own weights on the unshuffled tokens")
