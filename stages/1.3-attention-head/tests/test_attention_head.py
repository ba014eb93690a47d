"""Graded checks for stage 1.3 — one attention head, causal and padding masks.

Reference numerics: ``torch.nn.functional.scaled_dot_product_attention`` applied to the
head's own projections (``head.query``, ``head.key``, ``head.value``). SDPA's boolean mask
means the opposite of this course's (SDPA: True = may attend; here: True = blocked), so the
references pass it ``~mask``. Named mistakes are recognised by computing each mistake's
output on the same input (``manual`` below, the paper's eq. 1 with one thing changed).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shared.testing import (
    check,
    check_close,
    check_shape,
    covers,
    declare_parts,
    fail,
    likely,
    matching_mistakes,
    raised,
)

# ---------------------------------------------------------------- names of the mistakes (the lesson lists them)

SOFTMAX_QUERY_AXIS = "softmax over the query axis (dim=-2) instead of the key axis (dim=-1)"
NO_SQRT = "scores divided by d_head instead of sqrt(d_head)"
NO_SCALE = "scores not scaled at all (missing / sqrt(d_head))"
CAUSAL_WRONG_WAY = "causal mask points the wrong way (tril instead of triu): the future is visible, the past hidden"
CAUSAL_DIAGONAL = "causal mask hides the diagonal (triu with diagonal=0): a token cannot attend to itself"
CAUSAL_IGNORED = "causal=True ignored: no look-ahead mask applied"
FILL_ZERO = "masked scores filled with 0 instead of -inf: blocked keys still get weight"
FILL_FINITE = (
    "masked scores filled with a large finite number (e.g. -1e9) instead of -inf: a query with no visible key"
    " averages all the values instead of returning zeros"
)
AFTER_SOFTMAX = "mask applied after the softmax: the visible weights no longer sum to 1"
PAD_ON_QUERIES = "key_padding_mask applied to queries, viewed as (B, T, 1), instead of keys, viewed as (B, 1, T)"
PAD_IGNORED = "key_padding_mask ignored"
NAN_SUFFIX = "; and a query with no visible key comes out NaN"
PAD_REPLACES_CAUSAL = "the padding mask replaces the causal mask instead of being OR-ed with it (mask = pad, not mask | pad)"
DROPOUT_ON_OUTPUT = "dropout applied to the output (or the values) instead of the weights"
UNDROPPED_RETURNED = "the weights returned are the undropped softmax (dropout applied for the output, not to the weights returned)"
T_FROM_BATCH = "T read from x.size(0), the batch axis, instead of x.size(1)"

# The part of the learner's code each mistake lives in: a passing check that covers the part rules it out.
declare_parts({
    SOFTMAX_QUERY_AXIS: "the softmax axis", NO_SQRT: "the scores' scale", NO_SCALE: "the scores' scale",
    CAUSAL_WRONG_WAY: "the causal mask", CAUSAL_DIAGONAL: "the causal mask", CAUSAL_IGNORED: "the causal mask",
    FILL_ZERO: "the masked fill value", FILL_FINITE: "the masked fill value", AFTER_SOFTMAX: "where the mask is applied",
    PAD_ON_QUERIES: "key_padding_mask", PAD_IGNORED: "key_padding_mask", PAD_REPLACES_CAUSAL: "combining the masks",
    DROPOUT_ON_OUTPUT: "dropout", UNDROPPED_RETURNED: "dropout", T_FROM_BATCH: "reading T",
})

# ---------------------------------------------------------------- references


def project(head: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (each (B, T, d_head)) from the head's own Linear layers, without autograd."""
    with torch.no_grad():
        return (
            F.linear(x, head.query.weight, head.query.bias),
            F.linear(x, head.key.weight, head.key.bias),
            F.linear(x, head.value.weight, head.value.bias),
        )


def blocked_mask(B: int, T: int, *, causal: bool = False, kpm: torch.Tensor | None = None) -> torch.Tensor | None:
    """The course's (B, T, T) bool mask (True = blocked), or None."""
    mask = torch.zeros(B, T, T, dtype=torch.bool)
    if causal:
        mask |= torch.ones(T, T, dtype=torch.bool).triu(1)
    if kpm is not None:
        mask |= kpm[:, None, :].cpu()
    return mask if (causal or kpm is not None) else None


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocked: torch.Tensor | None) -> torch.Tensor:
    """torch's SDPA with the course's convention: fully blocked rows are zeros."""
    if blocked is None:
        return F.scaled_dot_product_attention(q, k, v)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=~blocked)  # SDPA: True = MAY attend, so invert
    return out.masked_fill(blocked.all(-1, keepdim=True), 0.0)


def manual(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    blocked: torch.Tensor | None = None,
    *,
    softmax_dim: int = -1,
    scale: float | None = None,
    fill: float = float("-inf"),
    zero_empty: bool = True,
    after_softmax: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 of the paper, or a named mistake's version of it: (out, weights)."""
    scale = math.sqrt(q.size(-1)) if scale is None else scale
    s = q @ k.transpose(-2, -1) / scale
    if blocked is not None and not after_softmax:
        s = s.masked_fill(blocked, fill)
    w = s.softmax(softmax_dim)
    if blocked is not None:
        if after_softmax:
            w = w.masked_fill(blocked, 0.0)
        elif zero_empty:
            w = w.masked_fill(blocked.all(-1, keepdim=True), 0.0)
    return w @ v, w


def mistakes(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    B: int,
    T: int,
    causal: bool = False,
    kpm: torch.Tensor | None = None,
    weights: bool = False,
) -> dict[str, object]:
    """Every named mistake's output (or weights) on this input, with a NaN variant where one differs."""
    right = blocked_mask(B, T, causal=causal, kpm=kpm)
    pad = None if kpm is None else kpm[:, None, :].cpu()
    ones = torch.ones(T, T, dtype=torch.bool)

    def with_causal(c: torch.Tensor | None) -> torch.Tensor | None:
        parts = [m for m in (c, pad) if m is not None]
        if not parts:
            return None
        return parts[0] | parts[1] if len(parts) == 2 else parts[0].expand(B, T, T)

    cases: dict[str, dict] = {
        SOFTMAX_QUERY_AXIS: {"blocked": right, "softmax_dim": -2},
        NO_SQRT: {"blocked": right, "scale": float(q.size(-1))},
        NO_SCALE: {"blocked": right, "scale": 1.0},
    }
    if right is not None:
        cases[FILL_ZERO] = {"blocked": right, "fill": 0.0, "zero_empty": False}
        cases[FILL_FINITE] = {"blocked": right, "fill": -1e9, "zero_empty": False}
        cases[AFTER_SOFTMAX] = {"blocked": right, "after_softmax": True}
    if causal:
        cases[CAUSAL_WRONG_WAY] = {"blocked": with_causal(ones.tril(0))}
        cases[CAUSAL_WRONG_WAY + " (strictly)"] = {"blocked": with_causal(ones.tril(-1))}
        cases[CAUSAL_DIAGONAL] = {"blocked": with_causal(ones.triu(0))}
        cases[CAUSAL_IGNORED] = {"blocked": with_causal(None)}
    if kpm is not None and causal:  # the same output as causal=True ignored: only the causal check tells them apart
        cases[PAD_REPLACES_CAUSAL] = {"blocked": pad.expand(B, T, T)}
    if kpm is not None:
        c = ones.triu(1) if causal else None
        cases[PAD_ON_QUERIES] = {"blocked": (kpm[:, :, None].cpu() | c) if c is not None else kpm[:, :, None].cpu()}
        cases[PAD_IGNORED] = {"blocked": c}
    table: dict[str, object] = {}
    for name, kw in cases.items():
        pick = 1 if weights else 0
        table[name] = (lambda kw=kw, pick=pick: manual(q, k, v, **kw)[pick])
        if kw.get("blocked") is not None and "zero_empty" not in kw and bool(kw["blocked"].all(-1).any()):
            table[name + NAN_SUFFIX] = (lambda kw=kw, pick=pick: manual(q, k, v, zero_empty=False, **kw)[pick])
    return table


def run_head(head: torch.nn.Module, x: torch.Tensor, **kw):  # noqa: ANN201
    """head(x, **kw); a RuntimeError (a broadcast of mismatched shapes) is explained, and T-from-the-batch-axis
    named when the same call runs with B == T (the probe on which that mistake cannot be told from the truth)."""
    try:
        return head(x, **kw)
    except NotImplementedError:
        raise
    except RuntimeError as exc:
        B, T, d = x.shape
        try:
            square = torch.randn(T, T, d, dtype=x.dtype)
            head(square, **{k: (v[:1].expand(T, T) if torch.is_tensor(v) else v) for k, v in kw.items()})
            names = [T_FROM_BATCH]
        except Exception:  # noqa: BLE001 - the probe only decides whether the name fits
            names = []
        fail(raised(exc, f"head(x) for x (B={B}, T={T}, d_model={d})" + (f" with {sorted(kw)}" if kw else ""), *names))


def padding(B: int, T: int, lengths: list[int]) -> torch.Tensor:
    """(B, T) key_padding_mask, True at positions >= lengths[b] (right padding)."""
    return torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]


def check_finite(out: torch.Tensor, what: str, table: dict[str, object] | None = None) -> None:
    """Fail (naming the mistake when one matches) if ``out`` holds NaN or inf."""
    if bool(torch.isfinite(out).all()):
        return
    names = matching_mistakes(out, table)
    rows = int((~torch.isfinite(out)).any(-1).sum())
    fail(f"{what}: {rows} output rows contain NaN/inf" + likely(*names))


# ---------------------------------------------------------------- Task 1: causal_mask


@covers("causal_mask")
def test_causal_mask(impl) -> None:
    """causal_mask(T) is True exactly above the diagonal (the future is blocked)"""
    got = impl.causal_mask(5)
    check(isinstance(got, torch.Tensor), f"causal_mask must return a torch.Tensor, got {type(got).__name__}")
    check(got.dtype == torch.bool, f"causal_mask must return a bool tensor (True = blocked), got dtype {got.dtype}")
    ones = torch.ones(5, 5, dtype=torch.bool)
    expected = ones.triu(1)
    if not torch.equal(got.cpu(), expected):
        name = {
            CAUSAL_WRONG_WAY: ones.tril(0),
            CAUSAL_WRONG_WAY + " (strictly)": ones.tril(-1),
            CAUSAL_DIAGONAL: ones.triu(0),
            "the mask of ALLOWED positions returned (True = may attend), the opposite of the course's convention": ones.tril(0),
        }
        hits = [n for n, m in name.items() if torch.equal(got.cpu(), m)]
        fail(
            "causal_mask(5): expected True (blocked) exactly where key j > query i:\n"
            f"{expected.int().tolist()}\n  got:\n{got.int().tolist()}" + likely(*hits)
        )
    on_cpu = impl.causal_mask(3, device=torch.device("cpu"))  # the device cells of the matrix check it moves
    check(tuple(on_cpu.shape) == (3, 3), f"causal_mask(3, device=cpu) has shape {tuple(on_cpu.shape)}, expected (3, 3)")


# ---------------------------------------------------------------- Task 2: attention


@pytest.mark.points(2)
def test_attention_matches_sdpa(impl) -> None:
    """attention(q, k, v, mask) matches torch's scaled_dot_product_attention"""
    B, H, T, d = 2, 3, 5, 4
    q, k, v = torch.randn(B, H, T, d), torch.randn(B, H, T, d), torch.randn(B, H, T, d + 2)
    out, weights = impl.attention(q, k, v)
    check_shape(out, (B, H, T, d + 2), what="attention(q, k, v) output for q, k (2, 3, 5, 4) and v (2, 3, 5, 6)")
    check_shape(weights, (B, H, T, T), what="attention(q, k, v) weights")
    ref = dict(B=B * H, T=T)
    flat = (q.reshape(B * H, T, d), k.reshape(B * H, T, d), v.reshape(B * H, T, d + 2))
    table = {n: (lambda f=f: f().reshape(B, H, T, d + 2)) for n, f in mistakes(*flat, **ref).items()}
    check_close(out, F.scaled_dot_product_attention(q, k, v), what="attention(q, k, v), no mask",
                reference="torch.nn.functional.scaled_dot_product_attention", mistakes=table)

    mask = torch.rand(B, 1, T, T) < 0.4  # (B, 1, T, T) broadcasts over the 3 heads
    mask[..., 0] = False  # every query keeps key 0 visible
    out, weights = impl.attention(q, k, v, mask=mask)
    blocked = mask.expand(B, H, T, T)
    table = {
        FILL_ZERO: lambda: manual(q, k, v, blocked, fill=0.0)[0],
        AFTER_SOFTMAX: lambda: manual(q, k, v, blocked, after_softmax=True)[0],
        SOFTMAX_QUERY_AXIS: lambda: manual(q, k, v, blocked, softmax_dim=-2)[0],
        NO_SQRT: lambda: manual(q, k, v, blocked, scale=float(d))[0],
        "mask ignored": lambda: manual(q, k, v)[0],
        "mask inverted (True treated as MAY attend, SDPA's convention)": lambda: manual(q, k, v, ~blocked)[0],
    }
    check_close(out, sdpa(q, k, v, blocked), what="attention(q, k, v, mask) with a random (2, 1, 5, 5) mask",
                reference="scaled_dot_product_attention(q, k, v, attn_mask=~mask)", mistakes=table)
    check_close(weights.masked_fill(~blocked, 0.0), torch.zeros(B, H, T, T),
                what="attention weights at blocked (mask True) positions")


# ---------------------------------------------------------------- Task 3: AttentionHead


@pytest.mark.points(2)
@covers("the softmax axis", "the scores' scale")
def test_head_matches_sdpa(impl) -> None:
    """AttentionHead(x) = SDPA on its own query/key/value projections, shape (B, T, d_head)"""
    B, T, d_model, d_head = 2, 6, 8, 4
    head = impl.AttentionHead(d_model, d_head)
    for name in ("query", "key", "value"):
        lin = getattr(head, name, None)
        check(isinstance(lin, torch.nn.Linear), f"AttentionHead needs a submodule `{name}` = nn.Linear(d_model, d_head)")
        check(tuple(lin.weight.shape) == (d_head, d_model),
              f"head.{name}.weight has shape {tuple(lin.weight.shape)}, expected (d_head, d_model) = {(d_head, d_model)}")
        check(lin.bias is None, f"head.{name} has a bias; the default is bias=False")
    x = torch.randn(B, T, d_model)
    out = run_head(head, x)
    check(isinstance(out, torch.Tensor), f"head(x) must return a tensor unless return_weights=True, got {type(out).__name__}")
    q, k, v = project(head, x)
    check_close(out, sdpa(q, k, v, None), what="AttentionHead(8, 4)(x) for x (2, 6, 8)",
                reference="scaled_dot_product_attention on the head's projections", mistakes=mistakes(q, k, v, B=B, T=T))


@pytest.mark.points(2)
@covers("the causal mask")
def test_causal_head_matches_sdpa(impl) -> None:
    """causal=True matches SDPA with is_causal=True"""
    B, T, d_model, d_head = 2, 6, 8, 4
    head = impl.AttentionHead(d_model, d_head)
    x = torch.randn(B, T, d_model)
    out = run_head(head, x, causal=True)
    q, k, v = project(head, x)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    check_close(out, expected, what="AttentionHead(8, 4)(x, causal=True)",
                reference="scaled_dot_product_attention(..., is_causal=True)",
                mistakes=mistakes(q, k, v, B=B, T=T, causal=True))


@covers("the causal mask")
def test_causality_property(impl) -> None:
    """with causal=True, changing tokens after position t never changes outputs at positions <= t"""
    B, T, d_model, d_head = 2, 7, 8, 4
    head = impl.AttentionHead(d_model, d_head)
    x = torch.randn(B, T, d_model)
    out = run_head(head, x, causal=True).detach()
    _, _, v = project(head, x)
    check_close(out[:, 0], v[:, 0], what="causal output at position 0 (it can only see itself, so it is its own value)",
                mistakes={CAUSAL_DIAGONAL: torch.zeros_like(v[:, 0]), CAUSAL_DIAGONAL + NAN_SUFFIX: torch.full_like(v[:, 0], float("nan"))})
    for t in range(T - 1):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn(B, T - t - 1, d_model)  # a different future
        out2 = run_head(head, x2, causal=True).detach()
        diff = float((out2[:, : t + 1] - out[:, : t + 1]).abs().max())
        if not diff < 1e-5:
            fail(
                f"changing only the tokens after position {t} changed the causal output at positions 0..{t}"
                f" (largest change {diff:.3g}): a query can see keys after it.\n"
                "  (the mask must block every key after its query)" + likely(CAUSAL_WRONG_WAY, CAUSAL_IGNORED)
            )


def test_padding_matches_sdpa(impl) -> None:
    """key_padding_mask (True = padding) with causal=True matches SDPA given the inverted mask"""
    B, T, d_model, d_head = 3, 6, 8, 4
    head = impl.AttentionHead(d_model, d_head)
    x = torch.randn(B, T, d_model)
    kpm = padding(B, T, [6, 4, 2])
    out = run_head(head, x, causal=True, key_padding_mask=kpm)
    q, k, v = project(head, x)
    blocked = blocked_mask(B, T, causal=True, kpm=kpm)
    check_close(out, sdpa(q, k, v, blocked), what="AttentionHead(x, causal=True, key_padding_mask) with lengths [6, 4, 2]",
                reference="scaled_dot_product_attention(..., attn_mask=~(causal | padding))",
                mistakes=mistakes(q, k, v, B=B, T=T, causal=True, kpm=kpm))


@covers("key_padding_mask")
def test_padding_property(impl) -> None:
    """changing padded tokens changes no output at a real (non-padded) position"""
    B, T, d_model, d_head = 3, 6, 8, 4
    head = impl.AttentionHead(d_model, d_head)
    x = torch.randn(B, T, d_model)
    kpm = padding(B, T, [6, 4, 2])
    out = run_head(head, x, key_padding_mask=kpm).detach()
    q, k, v = project(head, x)
    check_finite(out, "head(x, key_padding_mask) with lengths [6, 4, 2]", mistakes(q, k, v, B=B, T=T, kpm=kpm))
    x2 = torch.where(kpm[:, :, None], torch.randn(B, T, d_model), x)  # new garbage in the padding only
    out2 = run_head(head, x2, key_padding_mask=kpm).detach()
    real = ~kpm
    diff = float((out2 - out).abs().amax(-1)[real].max())
    if not diff < 1e-5:
        hits = [n for n in (PAD_ON_QUERIES, PAD_IGNORED)
                if torch.allclose(out, manual(q, k, v, None if n == PAD_IGNORED else kpm[:, :, None])[0], atol=1e-5)]
        hint = likely(*hits)
        fail(
            f"changing only padded tokens changed outputs at real positions (largest change {diff:.3g}):"
            " real queries are attending to padding. key_padding_mask[b, j] = True must block KEY j"
            " for every query of sequence b." + hint
        )


@pytest.mark.points(2)
def test_fully_masked_rows_are_zero(impl) -> None:
    """a query whose keys are all masked returns zeros (weights all zero), never NaN, and its gradient is finite"""
    B, T, d_model, d_head = 2, 5, 8, 4
    head = impl.AttentionHead(d_model, d_head)
    x = torch.randn(B, T, d_model, requires_grad=True)
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[0, :2] = True  # left padding: with causal=True, queries 0 and 1 of sequence 0 see nothing
    kpm[1, :] = True  # sequence 1 is all padding
    out, weights = run_head(head, x, causal=True, key_padding_mask=kpm, return_weights=True)
    q, k, v = project(head, x.detach())
    blocked = blocked_mask(B, T, causal=True, kpm=kpm)
    if torch.isnan(out).any():
        names = matching_mistakes(out, mistakes(q, k, v, B=B, T=T, causal=True, kpm=kpm))
        check(not names, "the output contains NaN." + likely(*names))
        fail(
            f"{int(torch.isnan(out).any(-1).sum())} output rows are NaN. A query whose keys are all masked has"
            " scores all -inf, and softmax of that row is 0/0 = NaN. The course defines that row as zeros:"
            " after the softmax, set the weights of rows where mask.all(dim=-1) to 0 (masked_fill)."
        )
    check_close(out, sdpa(q, k, v, blocked), what="output with fully masked rows (sequence 1 all padding; left padding + causal)",
                reference="SDPA on the visible rows, zeros on the fully masked ones",
                mistakes={FILL_FINITE: lambda: manual(q, k, v, blocked, fill=-1e9, zero_empty=False)[0],
                          FILL_ZERO: lambda: manual(q, k, v, blocked, fill=0.0, zero_empty=False)[0]})
    empty = blocked.all(-1)  # (B, T) queries that see nothing
    check(bool((weights.detach()[empty] == 0).all()), "the attention weights of a fully masked query must be all zero")
    (out * torch.randn_like(out)).sum().backward()
    grads = {"x": x.grad, **{n: p.grad for n, p in head.named_parameters()}}
    bad = [n for n, g in grads.items() if g is None or not bool(torch.isfinite(g).all())]
    check(not bad, f"gradients of {bad} are missing or contain NaN/inf. Zero the fully masked rows of the WEIGHTS"
          " (masked_fill before the @ v), not the output afterwards: NaN weights still poison the gradient of v.")


def test_returned_weights(impl) -> None:
    """return_weights gives (B, T, T) weights: zero where blocked, each row summing to 1, and out = weights @ v"""
    B, T, d_model, d_head = 2, 6, 8, 4
    head = impl.AttentionHead(d_model, d_head)
    x = torch.randn(B, T, d_model)
    kpm = padding(B, T, [6, 3])
    res = run_head(head, x, causal=True, key_padding_mask=kpm, return_weights=True)
    check(isinstance(res, tuple) and len(res) == 2, "head(x, return_weights=True) must return a pair (out, weights)")
    out, w = res
    check_shape(w, (B, T, T), what="weights from head(x, return_weights=True)")
    q, k, v = project(head, x)
    blocked = blocked_mask(B, T, causal=True, kpm=kpm)
    check_close(w.sum(-1), torch.ones(B, T), what="row sums of the attention weights (each query's weights over the keys)",
                mistakes={AFTER_SOFTMAX: lambda: manual(q, k, v, blocked, after_softmax=True)[1].sum(-1),
                          SOFTMAX_QUERY_AXIS: lambda: manual(q, k, v, blocked, softmax_dim=-2)[1].sum(-1)})
    check_close(w, manual(q, k, v, blocked)[1], what="attention weights",
                reference="softmax(q k^T / sqrt(d_head), masked with -inf)",
                mistakes=mistakes(q, k, v, B=B, T=T, causal=True, kpm=kpm, weights=True))
    check_close(out, w.detach() @ v, what="out versus weights @ v (the output must be the weights applied to the values)")


@covers("dropout")
def test_dropout_on_weights_in_training_only(impl) -> None:
    """dropout hits the attention weights in train mode only; eval mode is deterministic"""
    B, T, d_model, d_head, p = 2, 6, 8, 4, 0.5
    head = impl.AttentionHead(d_model, d_head, dropout=p)
    check(isinstance(getattr(head, "dropout", None), torch.nn.Dropout), "AttentionHead needs self.dropout = nn.Dropout(dropout)")
    x = torch.randn(B, T, d_model)
    q, k, v = project(head, x)
    ref_out, ref_w = manual(q, k, v)
    # Eval mode is compared with YOUR head built with dropout=0 (same weights), not with the reference:
    # a wrong attention elsewhere is another check's business; this one is about dropout only.
    twin = impl.AttentionHead(d_model, d_head, dropout=0.0).eval()
    twin.load_state_dict(head.state_dict())
    head.eval()
    out1, out2 = run_head(head, x).detach(), run_head(head, x).detach()
    check(torch.equal(out1, out2), "two eval-mode calls on the same input differ: dropout must be off in eval mode")
    check_close(out1, twin(x).detach(), what="eval-mode output with dropout=0.5 versus your head with dropout=0"
                " (dropout must be off in eval mode)")
    head.train()
    out, w = run_head(head, x, return_weights=True)
    out, w = out.detach(), w.detach()
    if torch.allclose(out, ref_out, atol=1e-6):
        fail("train-mode output equals the eval-mode output: dropout is not applied in training mode"
             " (call self.dropout on the attention weights)")
    if torch.allclose(w, ref_w, atol=1e-6):
        # Which one: is the output itself a dropout of the undropped output (each entry 0 or scaled by 1/(1-p))?
        scaled = ref_out / (1 - p)
        on_output = bool(((out.abs() < 1e-6) | torch.isclose(out, scaled, atol=1e-5, rtol=1e-4)).all())
        fail("in train mode the returned weights are the undropped softmax: dropout must act on the attention"
             " WEIGHTS (before @ v) and return those, as torch.nn.MultiheadAttention does."
             + likely(DROPOUT_ON_OUTPUT if on_output else UNDROPPED_RETURNED))
    kept = w != 0
    check(bool((~kept).any()), "with p=0.5 some attention weights should be dropped to 0 in train mode")
    check_close(w[kept], ref_w[kept] / (1 - p), what="kept attention weights in train mode (they are scaled by 1/(1-p))")
    check_close(out, w @ v, what="train-mode output versus (dropped-out weights) @ v")


def directional_gradcheck(head: torch.nn.Module, x: torch.Tensor, f, *, probes: int = 3, eps: float = 1e-6) -> None:
    """The check of ``torch.autograd.gradcheck(..., fast_mode=True)``, on x and every parameter at once.

    For random output weights r and a random direction u through (x, params), the autograd
    derivative of L = sum(r * f(x)) along u must equal the central difference
    (L(+eps u) - L(-eps u)) / 2 eps. Written out so that a failure can say what broke; the check then
    also runs torch.autograd.gradcheck itself on the input.
    """
    leaves = [x, *head.parameters()]
    with torch.no_grad():
        check_finite(f(x), "forward pass in float64 (causal + padding)")
    for probe in range(probes):
        r = torch.randn_like(f(x).detach())
        us = [torch.randn_like(leaf) for leaf in leaves]
        try:
            grads = torch.autograd.grad((f(x) * r).sum(), leaves, allow_unused=True)
        except NotImplementedError:
            raise
        except RuntimeError as exc:
            msg = str(exc)
            if "inplace" in msg or "in-place" in msg:
                fail("backward failed: a tensor autograd needs was modified in place (e.g. `weights[rows] = 0`)."
                     f" Use out-of-place masked_fill instead.\n  torch said: {msg.splitlines()[0][:300]}")
            fail(f"backward failed: keep every step a differentiable torch op (no .detach(), .data, .item(), NumPy)."
                 f"\n  torch said: {msg.splitlines()[0][:300]}")
        names = ["x"] + [n for n, _ in head.named_parameters()]
        missing = [n for n, g in zip(names, grads, strict=True) if g is None]
        check(not missing, f"no gradient reaches {missing}: the output must depend on them through torch ops")
        analytic = sum(float((g * u).sum()) for g, u in zip(grads, us, strict=True))
        with torch.no_grad():
            for leaf, u in zip(leaves, us, strict=True):
                leaf.add_(eps * u)
            plus = float((f(x) * r).sum())
            for leaf, u in zip(leaves, us, strict=True):
                leaf.sub_(2 * eps * u)
            minus = float((f(x) * r).sum())
            for leaf, u in zip(leaves, us, strict=True):
                leaf.add_(eps * u)
        numeric = (plus - minus) / (2 * eps)
        if not math.isclose(analytic, numeric, rel_tol=1e-5, abs_tol=1e-7):
            fail(f"probe {probe}: the autograd derivative {analytic:.8g} differs from the finite difference"
                 f" {numeric:.8g} (float64). Something in forward is not a differentiable torch op, or the"
                 " gradient is cut (.detach(), .data, torch.tensor(...) of an intermediate).")


def test_gradients_match_finite_differences(impl) -> None:
    """gradients match finite differences in float64 (causal + padding), for x and every parameter"""
    head = impl.AttentionHead(4, 3, bias=True).double()
    x = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    kpm = padding(2, 4, [4, 3])
    # Every parameter and x, by the directional test of gradcheck's fast mode (it names what broke) ...
    directional_gradcheck(head, x, lambda inp: head(inp, causal=True, key_padding_mask=kpm))
    # ... then torch's own gradcheck with respect to the input, the trusted reference for gradients.
    if not torch.autograd.gradcheck(
        lambda inp: head(inp, causal=True, key_padding_mask=kpm), (x,), eps=1e-6, atol=1e-5, raise_exception=False
    ):
        fail("torch.autograd.gradcheck: the gradient of AttentionHead w.r.t. its input x differs from finite"
             " differences (float64). Something in forward is not a differentiable torch op, or the gradient is cut"
             " (.detach(), .data, torch.tensor(...) of an intermediate).")


# ---------------------------------------------------------------- devices and precision


def test_head_on_every_device_and_precision(impl, setting) -> None:
    """the head (causal + padding) gives the reference result on this device / precision"""
    B, T, d_model, d_head = 2, 6, 16, 8
    head = impl.AttentionHead(d_model, d_head).eval()
    x = torch.randn(B, T, d_model)
    kpm = padding(B, T, [6, 4])
    q, k, v = project(head, x)
    expected = sdpa(q, k, v, blocked_mask(B, T, causal=True, kpm=kpm))
    head = setting.module(head)
    with setting.autocast():
        out = head(setting.tensor(x), causal=True, key_padding_mask=setting.tensor(kpm))
    setting.sync()
    check(out.device.type == setting.device, f"output on {out.device}, expected {setting.device}: create new tensors on x.device")
    check_close(out.float().cpu(), expected, what=f"AttentionHead on {setting.id}", **setting.tol,
                mistakes=mistakes(q, k, v, B=B, T=T, causal=True, kpm=kpm))
