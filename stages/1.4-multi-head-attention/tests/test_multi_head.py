"""Graded checks for stage 1.4 — multi-head attention.

Reference numerics: ``torch.nn.MultiheadAttention(batch_first=True)`` with its weights copied
into yours (``in_proj_weight`` split into q / k / v, then ``out_proj``; padding and causal masks handed
to it as the equivalent per-head boolean ``attn_mask``, see ``torch_masks``), and stage 1.3's
``AttentionHead`` (via ``shared.loader.load_dep``). Named mistakes are recognised by computing
each mistake's output from the same weights (``manual`` below: the paper's §3.2.2 in float64,
with one thing changed).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from shared.loader import load_dep
from shared.testing import (
    check,
    check_close,
    check_shape,
    covers,
    declare_parts,
    expect_raises,
    fail,
    likely,
    matching_mistakes,
)

# ---------------------------------------------------------------- names of the mistakes (the lesson lists them)

RESHAPE = "heads split by a reshape without the transpose: tokens and heads get mixed"
RESHAPE_BOTH = RESHAPE + " (and merged back the same way)"
SQRT_D_MODEL = "scores scaled by sqrt(d_model) instead of sqrt(d_head)"
NO_OUT_PROJ = "the output projection (out_proj) forgotten"
KPM_QUERIES = "key_padding_mask broadcast over the wrong axis: applied to queries (B, 1, T, 1) instead of keys (B, 1, 1, T)"
SOFTMAX_Q = "softmax over the query axis (dim=-2) instead of the key axis (dim=-1)"
CAUSAL_WRONG = "causal mask points the wrong way (tril instead of triu)"
CAUSAL_IGNORED = "is_causal ignored"
KPM_IGNORED = "key_padding_mask ignored"
HEAD_ORDER = "(B*n_heads, Tq, Tk) attn_mask viewed as (n_heads, B, Tq, Tk) instead of (B, n_heads, Tq, Tk)"
FLOAT_IGNORED = "float attn_mask ignored (it must be added to the scores)"
BOOL_INVERTED = "boolean attn_mask inverted (True treated as MAY attend)"
SUMMED = "weights summed over the heads instead of averaged"
SDPA_NOT_INVERTED = "boolean mask passed to scaled_dot_product_attention without inverting it (SDPA: True = MAY attend)"
VALUE_FROM_QUERY = "value defaulted to query instead of key"
MERGE_RESHAPE = "heads merged by a reshape without the transpose back: (B, h, T, d_head) reshaped straight to (B, T, d_model)"
CAUSAL_REPLACES_PAD = "the causal mask replaces the padding mask instead of being OR-ed with it (blocked = m, not blocked | m)"
PAD_REPLACES_CAUSAL = "the padding mask replaces the causal mask instead of being OR-ed with it"

# The part of the learner's code each mistake lives in: a passing check that covers the part rules it out.
declare_parts({
    RESHAPE: "split_heads", RESHAPE_BOTH: "split_heads", MERGE_RESHAPE: "merge_heads",
    SQRT_D_MODEL: "the scores' scale", NO_OUT_PROJ: "out_proj", SOFTMAX_Q: "the softmax axis",
    KPM_QUERIES: "key_padding_mask", KPM_IGNORED: "key_padding_mask", CAUSAL_WRONG: "is_causal", CAUSAL_IGNORED: "is_causal",
    HEAD_ORDER: "per-head attn_mask", FLOAT_IGNORED: "float attn_mask", BOOL_INVERTED: "bool attn_mask",
    SUMMED: "averaged weights", SDPA_NOT_INVERTED: "the SDPA path's mask", VALUE_FROM_QUERY: "value's default",
    CAUSAL_REPLACES_PAD: "combining the masks", PAD_REPLACES_CAUSAL: "combining the masks",
})

# ---------------------------------------------------------------- references


def make_pair(d: int, h: int, *, bias: bool = True, use_sdpa: bool = False, impl=None, dropout: float = 0.0):
    """(torch's nn.MultiheadAttention, yours) holding the same weights; both in eval mode."""
    ref = nn.MultiheadAttention(d, h, batch_first=True, bias=bias, dropout=dropout).eval()
    mine = impl.MultiHeadAttention(d, h, dropout=dropout, bias=bias, use_sdpa=use_sdpa).eval()
    copy_weights(ref, mine)
    return ref, mine


def copy_weights(ref: nn.MultiheadAttention, mine: nn.Module) -> None:
    d = ref.embed_dim
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        lin = getattr(mine, name, None)
        check(isinstance(lin, nn.Linear), f"MultiHeadAttention needs a submodule `{name}` = nn.Linear(d_model, d_model)")
        check(tuple(lin.weight.shape) == (d, d), f"{name}.weight has shape {tuple(lin.weight.shape)}, expected {(d, d)}")
    with torch.no_grad():
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            lin = getattr(mine, name)
            lin.weight.copy_(ref.in_proj_weight[i * d : (i + 1) * d])
            if ref.in_proj_bias is not None:
                lin.bias.copy_(ref.in_proj_bias[i * d : (i + 1) * d])
        mine.out_proj.weight.copy_(ref.out_proj.weight)
        if ref.out_proj.bias is not None:
            mine.out_proj.bias.copy_(ref.out_proj.bias)


def params(ref: nn.MultiheadAttention) -> dict[str, torch.Tensor | None]:
    d = ref.embed_dim
    W, b = ref.in_proj_weight.detach().double(), ref.in_proj_bias
    b = None if b is None else b.detach().double()
    out = {"h": ref.num_heads, "Wo": ref.out_proj.weight.detach().double(),
           "bo": None if ref.out_proj.bias is None else ref.out_proj.bias.detach().double()}
    for i, n in enumerate("qkv"):
        out["W" + n] = W[i * d : (i + 1) * d]
        out["b" + n] = None if b is None else b[i * d : (i + 1) * d]
    return out


def manual(
    p: dict,
    query: torch.Tensor,
    key: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
    *,
    blocked: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    mistake: str = "",
    zero_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """§3.2.2 in float64, or a named mistake's version of it: (out (B, Tq, d), per-head weights (B, h, Tq, Tk))."""
    key = query if key is None else key
    value = (query if mistake == VALUE_FROM_QUERY else key) if value is None else value
    query, key, value = query.double().cpu(), key.double().cpu(), value.double().cpu()
    h = p["h"]
    B, Tq, d = query.shape
    dh = d // h

    def split(t: torch.Tensor) -> torch.Tensor:
        if mistake in (RESHAPE, RESHAPE_BOTH):
            return t.reshape(B, h, t.size(1), dh)
        return t.view(B, t.size(1), h, dh).transpose(1, 2)

    q = split(F.linear(query, p["Wq"], p["bq"]))
    k = split(F.linear(key, p["Wk"], p["bk"]))
    v = split(F.linear(value, p["Wv"], p["bv"]))
    s = q @ k.transpose(-2, -1) / math.sqrt(d if mistake == SQRT_D_MODEL else dh)  # (B, h, Tq, Tk)
    if bias is not None:
        s = s + bias.double().cpu()
    if blocked is not None:
        s = s.masked_fill(blocked.cpu(), float("-inf"))
    w = s.softmax(-2 if mistake == SOFTMAX_Q else -1)
    if blocked is not None:
        w = w.masked_fill(blocked.cpu().all(-1, keepdim=True), 0.0)
    o = w @ v  # (B, h, Tq, dh)
    if zero_rows is not None:
        o = o.masked_fill(zero_rows, 0.0)
    merged = o.reshape(B, Tq, d) if mistake in (RESHAPE_BOTH, MERGE_RESHAPE) else o.transpose(1, 2).reshape(B, Tq, d)  # (B, Tq, d)
    out = merged if mistake == NO_OUT_PROJ else F.linear(merged, p["Wo"], p["bo"])
    return out, w


def masks(B: int, h: int, Tq: int, Tk: int, *, kpm=None, causal=False, attn=None, way: str = "") -> torch.Tensor | None:
    """The course's bool mask (B, h, Tq, Tk), True = blocked, or a mistaken one (``way``)."""
    m = torch.zeros(B, h, Tq, Tk, dtype=torch.bool)
    ones = torch.ones(Tq, Tk, dtype=torch.bool)
    if kpm is not None and way != KPM_IGNORED:
        m |= kpm.view(B, 1, Tq, 1) if way == KPM_QUERIES else kpm.view(B, 1, 1, Tk)
    if causal and way != CAUSAL_IGNORED:
        m |= ones.tril(0) if way == CAUSAL_WRONG else ones.triu(1)
    if attn is not None:
        if attn.dim() == 3:
            m |= attn.view(h, B, Tq, Tk).transpose(0, 1) if way == HEAD_ORDER else attn.view(B, h, Tq, Tk)
        else:
            m |= ~attn if way == BOOL_INVERTED else attn
    return m


def mistake_table(p: dict, query, key=None, value=None, *, B, Tq, Tk, kpm=None, causal=False, attn=None,
                  bias=None, weights: str = "") -> dict[str, object]:
    """name -> the output (or weights: "avg" / "heads") that mistake produces on this input."""
    h = p["h"]
    right = masks(B, h, Tq, Tk, kpm=kpm, causal=causal, attn=attn)
    cases: list[tuple[str, str, torch.Tensor | None]] = [
        (n, n, right) for n in (RESHAPE, RESHAPE_BOTH, MERGE_RESHAPE, SQRT_D_MODEL, NO_OUT_PROJ, SOFTMAX_Q)
    ]
    if kpm is not None:
        if Tq == Tk:
            cases.append((KPM_QUERIES, "", masks(B, h, Tq, Tk, kpm=kpm, causal=causal, attn=attn, way=KPM_QUERIES)))
        cases.append((KPM_IGNORED, "", masks(B, h, Tq, Tk, kpm=kpm, causal=causal, attn=attn, way=KPM_IGNORED)))
    if causal:
        for way in (CAUSAL_WRONG, CAUSAL_IGNORED):
            cases.append((way, "", masks(B, h, Tq, Tk, kpm=kpm, causal=causal, attn=attn, way=way)))
    if causal and kpm is not None and attn is None:  # one mask kept, the other dropped: the same output as one ignored
        cases.append((CAUSAL_REPLACES_PAD, "", masks(B, h, Tq, Tk, causal=True)))
        cases.append((PAD_REPLACES_CAUSAL, "", masks(B, h, Tq, Tk, kpm=kpm)))
    if attn is not None:
        way = HEAD_ORDER if attn.dim() == 3 else BOOL_INVERTED
        cases.append((way, "", masks(B, h, Tq, Tk, kpm=kpm, causal=causal, attn=attn, way=way)))
    if key is not None and value is None:
        cases.append((VALUE_FROM_QUERY, VALUE_FROM_QUERY, right))
    table: dict[str, object] = {}
    for name, mistake, blocked in cases:
        def compute(mistake=mistake, blocked=blocked):
            out, w = manual(p, query, key, value, blocked=blocked, bias=bias, mistake=mistake)
            return {"": out, "avg": w.mean(1) if w is not None else None, "heads": w}[weights]
        table[name] = compute
    if bias is not None:
        def ignored():
            out, w = manual(p, query, key, value, blocked=right)
            return {"": out, "avg": w.mean(1), "heads": w}[weights]
        table[FLOAT_IGNORED] = ignored
    if weights == "avg":
        table[SUMMED] = lambda: manual(p, query, key, value, blocked=right, bias=bias)[1].sum(1)
    return table


def torch_masks(B: int, h: int, T: int, kpm: torch.Tensor | None, causal: bool) -> dict[str, torch.Tensor | None]:
    """The same masks for nn.MultiheadAttention, as one per-head (B*h, T, T) bool attn_mask.

    Equivalent to passing key_padding_mask (and the causal attn_mask), but torch's key_padding_mask
    check imports sympy on first use (~0.5 s), too slow for a graded check.
    """
    if kpm is None and not causal:
        return {"attn_mask": None}
    return {"attn_mask": masks(B, h, T, T, kpm=kpm, causal=causal).reshape(B * h, T, T)}  # (B*h, T, T)


def lengths_mask(lengths: list[int], T: int) -> torch.Tensor:
    """(B, T) key_padding_mask, True at positions >= lengths[b]."""
    return torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]


def call(mine: nn.Module, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    res = mine(*args, **kwargs)
    check(isinstance(res, tuple) and len(res) == 2, f"MultiHeadAttention must return a pair (out, weights), got {type(res).__name__}")
    return res


# ---------------------------------------------------------------- Task 1: __init__


def test_init_and_parameter_count(impl) -> None:
    """d_model, n_heads, d_head and four (d_model, d_model) projections: as many parameters as nn.MultiheadAttention"""
    for bias in (True, False):
        mine = impl.MultiHeadAttention(16, 4, bias=bias)
        check((getattr(mine, "d_model", None), getattr(mine, "n_heads", None), getattr(mine, "d_head", None)) == (16, 4, 4),
              "MultiHeadAttention(16, 4) should have d_model=16, n_heads=4, d_head=4; got "
              f"{getattr(mine, 'd_model', None)}, {getattr(mine, 'n_heads', None)}, {getattr(mine, 'd_head', None)}")
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            lin = getattr(mine, name, None)
            check(isinstance(lin, nn.Linear) and tuple(lin.weight.shape) == (16, 16),
                  f"`{name}` must be nn.Linear(d_model, d_model) (all heads side by side), got {lin!r}")
            check((lin.bias is not None) == bias, f"{name} has bias={lin.bias is not None}, expected bias={bias}")
        check(getattr(mine, "use_sdpa", None) is False and isinstance(getattr(mine, "dropout", None), nn.Dropout),
              "MultiHeadAttention(16, 4) should keep use_sdpa (False by default) and have dropout = nn.Dropout(dropout);"
              f" got use_sdpa={getattr(mine, 'use_sdpa', None)!r}, dropout={getattr(mine, 'dropout', None)!r}")
        ref = nn.MultiheadAttention(16, 4, batch_first=True, bias=bias)
        n_mine = sum(p.numel() for p in mine.parameters())
        n_ref = sum(p.numel() for p in ref.parameters())
        hint = likely(NO_OUT_PROJ) if n_mine == n_ref - 16 * 16 - 16 * bias else ""
        check(n_mine == n_ref, f"MultiHeadAttention(16, 4, bias={bias}) has {n_mine} parameters; torch's has {n_ref}"
              f" (4 * d_model^2{' + 4 * d_model' if bias else ''})." + hint)


def test_bad_n_heads_raises(impl) -> None:
    """d_model not divisible by n_heads raises ValueError naming both"""
    exc = expect_raises(ValueError, impl.MultiHeadAttention, 10, 3, what="MultiHeadAttention(d_model=10, n_heads=3)")
    msg = str(exc)
    check("10" in msg and "3" in msg, f"the ValueError should name d_model=10 and n_heads=3 so the fix is obvious; it says {msg!r}")


# ---------------------------------------------------------------- Task 2: split_heads, merge_heads


@covers("split_heads")
def test_split_heads(impl) -> None:
    """split_heads gives (B, h, T, d_head) with head i = features i*d_head.."""
    B, T, d, h = 2, 5, 12, 3
    x = torch.randn(B, T, d)
    got = impl.split_heads(x, h)
    expected = x.view(B, T, h, d // h).transpose(1, 2)  # (B, h, T, dh)
    check_close(got, expected, what="split_heads(x, 3) for x (2, 5, 12)", reference="x.view(B, T, h, d_head).transpose(1, 2)",
                mistakes={RESHAPE: x.reshape(B, h, T, d // h), "viewed as (B, T, h, d_head) but not transposed": x.view(B, T, h, d // h)})


@covers("merge_heads")
def test_merge_heads(impl) -> None:
    """merge_heads undoes split_heads: (B, h, T, d_head) -> (B, T, d_model)"""
    B, T, d, h = 2, 5, 12, 3
    x = torch.randn(B, T, d)
    heads = x.view(B, T, h, d // h).transpose(1, 2)  # (B, h, T, dh), split by the reference
    merged = impl.merge_heads(heads)
    check_close(merged, x, what="merge_heads(heads) for heads (2, 3, 5, 4) split from x (2, 5, 12) (it must give x back)",
                reference="heads.transpose(1, 2).reshape(B, T, d_model)", mistakes={MERGE_RESHAPE: heads.reshape(B, T, d)})


# ---------------------------------------------------------------- Task 3 + 4: forward against torch


@pytest.mark.points(2)
@covers("the scores' scale", "out_proj", "the softmax axis")
def test_self_attention_matches_torch(impl) -> None:
    """self-attention mha(x) equals nn.MultiheadAttention with the same weights"""
    B, T, d, h = 2, 5, 16, 4
    ref, mine = make_pair(d, h, impl=impl)
    x = torch.randn(B, T, d)
    out, w = call(mine, x)
    check(w is None, "need_weights defaults to False: the weights returned should be None")
    expected, _ = ref(x, x, x, need_weights=False)
    check_close(out, expected, what="MultiHeadAttention(16, 4)(x) for x (2, 5, 16)",
                reference="torch.nn.MultiheadAttention", mistakes=mistake_table(params(ref), x, B=B, Tq=T, Tk=T))


@covers("is_causal", "key_padding_mask")
def test_padding_and_causal_alone_match_torch(impl) -> None:
    """is_causal=True alone, and key_padding_mask (True = padding) alone, match nn.MultiheadAttention"""
    B, T, d, h = 3, 6, 16, 4
    ref, mine = make_pair(d, h, impl=impl)
    x = torch.randn(B, T, d)
    kpm = lengths_mask([6, 4, 3], T)  # right padding: every query keeps key 0
    p = params(ref)
    out, _ = call(mine, x, is_causal=True)
    expected, _ = ref(x, x, x, need_weights=False, **torch_masks(B, h, T, None, True))
    check_close(out, expected, what="mha(x, is_causal=True)", reference="torch.nn.MultiheadAttention",
                mistakes=mistake_table(p, x, B=B, Tq=T, Tk=T, causal=True))
    out, _ = call(mine, x, key_padding_mask=kpm)
    expected, _ = ref(x, x, x, need_weights=False, **torch_masks(B, h, T, kpm, False))
    check_close(out, expected, what="mha(x, key_padding_mask=lengths [6, 4, 3])", reference="torch.nn.MultiheadAttention",
                mistakes=mistake_table(p, x, B=B, Tq=T, Tk=T, kpm=kpm))


@covers("combining the masks")
def test_padding_and_causal_together_match_torch(impl) -> None:
    """key_padding_mask and is_causal=True together (OR-ed) match nn.MultiheadAttention"""
    B, T, d, h = 3, 6, 16, 4
    ref, mine = make_pair(d, h, impl=impl)
    x = torch.randn(B, T, d)
    kpm = lengths_mask([6, 4, 3], T)
    out, _ = call(mine, x, key_padding_mask=kpm, is_causal=True)
    expected, _ = ref(x, x, x, need_weights=False, **torch_masks(B, h, T, kpm, True))
    # When each mask alone is right (the check above), "one of them ignored" is ruled out in the report,
    # and what is left is how the two are combined.
    check_close(out, expected, what="mha(x, key_padding_mask=lengths [6, 4, 3], is_causal=True)",
                reference="torch.nn.MultiheadAttention", mistakes=mistake_table(params(ref), x, B=B, Tq=T, Tk=T, kpm=kpm, causal=True))


def test_attn_mask_forms_match_torch(impl) -> None:
    """attn_mask as bool (Tq, Tk), float (Tq, Tk) and per-head bool (B*n_heads, Tq, Tk) matches torch"""
    B, T, d, h = 2, 5, 16, 4
    ref, mine = make_pair(d, h, impl=impl)
    x = torch.randn(B, T, d)
    p = params(ref)
    bool2 = torch.rand(T, T) < 0.4
    bool2[:, 0] = False  # every query keeps key 0
    bool3 = torch.rand(B * h, T, T) < 0.4
    bool3[..., 0] = False
    float2 = torch.randn(T, T)
    for what, m in (("bool (5, 5)", bool2), ("float (5, 5)", float2), ("bool (B*n_heads, 5, 5) = (8, 5, 5)", bool3)):
        out, _ = call(mine, x, attn_mask=m)
        expected, _ = ref(x, x, x, need_weights=False, attn_mask=m)
        is_float = m.dtype != torch.bool
        table = mistake_table(p, x, B=B, Tq=T, Tk=T, attn=None if is_float else m, bias=m if is_float else None)
        check_close(out, expected, what=f"mha(x, attn_mask={what})", reference="torch.nn.MultiheadAttention", mistakes=table)


@pytest.mark.points(2)
def test_cross_attention_matches_torch(impl) -> None:
    """cross-attention mha(x, memory) over a longer, padded memory matches torch (value defaults to key)"""
    B, Tq, Tk, d, h = 2, 4, 7, 16, 4
    ref, mine = make_pair(d, h, impl=impl)
    x, mem = torch.randn(B, Tq, d), torch.randn(B, Tk, d)
    kpm = lengths_mask([7, 5], Tk)
    same = torch.randn(B, Tq, d)  # a memory as long as x first: a wrong default then still runs, and is named
    out, _ = call(mine, x, same)
    expected, _ = ref(x, same, same, need_weights=False)
    check_close(out, expected, what="mha(x, memory) with memory (2, 4, 16): value must default to key",
                reference="torch.nn.MultiheadAttention(x, memory, memory)",
                mistakes=mistake_table(params(ref), x, same, B=B, Tq=Tq, Tk=Tq))
    out, _ = call(mine, x, mem, key_padding_mask=kpm)
    check_shape(out, (B, Tq, d), what="mha(x (2, 4, 16), memory (2, 7, 16)): the output follows the queries")
    torch_mask = kpm.view(B, 1, 1, Tk).expand(B, h, Tq, Tk).reshape(B * h, Tq, Tk)  # = key_padding_mask, see torch_masks
    expected, _ = ref(x, mem, mem, need_weights=False, attn_mask=torch_mask)
    check_close(out, expected, what="mha(x, memory, key_padding_mask=lengths [7, 5]) with value defaulting to key",
                reference="torch.nn.MultiheadAttention(x, memory, memory)",
                mistakes=mistake_table(params(ref), x, mem, B=B, Tq=Tq, Tk=Tk, kpm=kpm))
    val = torch.randn(B, Tk, d)
    out, _ = call(mine, x, mem, val)
    expected, _ = ref(x, mem, val, need_weights=False)
    check_close(out, expected, what="mha(x, key, value) with three different sequences", reference="torch.nn.MultiheadAttention")


@covers("averaged weights")
def test_weights_match_torch(impl) -> None:
    """need_weights returns torch's weights: averaged (B, Tq, Tk) or per head (B, n_heads, Tq, Tk)"""
    B, T, d, h = 2, 5, 16, 4
    ref, mine = make_pair(d, h, impl=impl)
    x = torch.randn(B, T, d)
    kpm = lengths_mask([5, 3], T)
    p = params(ref)
    for avg in (True, False):
        out, w = call(mine, x, key_padding_mask=kpm, is_causal=True, need_weights=True, average_attn_weights=avg)
        _, ref_w = ref(x, x, x, need_weights=True, average_attn_weights=avg, **torch_masks(B, h, T, kpm, True))
        check(w is not None, "need_weights=True must return the attention weights, got None")
        shape = "(B, Tq, Tk)" if avg else "(B, n_heads, Tq, Tk)"
        check_shape(w, tuple(ref_w.shape), what=f"weights with average_attn_weights={avg}, expected {shape}")
        check_close(w, ref_w, what=f"attention weights (average_attn_weights={avg}, padding + causal)",
                    reference="torch.nn.MultiheadAttention(need_weights=True)",
                    mistakes=mistake_table(p, x, B=B, Tq=T, Tk=T, kpm=kpm, causal=True, weights="avg" if avg else "heads"))


def test_one_head_equals_attention_head(impl) -> None:
    """with n_heads=1, MultiHeadAttention = stage 1.3's AttentionHead followed by out_proj"""
    B, T, d = 2, 5, 8
    AttentionHead = load_dep("1.3").AttentionHead
    head = AttentionHead(d, d, bias=True).eval()
    mine = impl.MultiHeadAttention(d, 1).eval()
    with torch.no_grad():
        for a, b in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
            getattr(mine, a).weight.copy_(getattr(head, b).weight)
            getattr(mine, a).bias.copy_(getattr(head, b).bias)
    x = torch.randn(B, T, d)
    kpm = lengths_mask([5, 3], T)
    out, _ = call(mine, x, key_padding_mask=kpm, is_causal=True)
    with torch.no_grad():
        single = head(x, causal=True, key_padding_mask=kpm)  # (B, T, d)
        expected = mine.out_proj(single)
    check_close(out, expected, what="MultiHeadAttention(8, n_heads=1)(x, padding, causal)",
                reference="stage 1.3 AttentionHead(8, 8) then out_proj",
                mistakes={NO_OUT_PROJ: single})


@pytest.mark.points(2)
def test_heads_are_independent(impl) -> None:
    """changing one head's slice of q_proj / v_proj changes only that head's slice of the output before out_proj"""
    B, T, d, h = 2, 5, 12, 3
    dh = d // h
    mine = impl.MultiHeadAttention(d, h).eval()
    with torch.no_grad():  # out_proj = identity: the output IS the concatenated heads
        mine.out_proj.weight.copy_(torch.eye(d))
        mine.out_proj.bias.zero_()
    x = torch.randn(B, T, d)
    base, _ = call(mine, x)
    base = base.detach()
    for proj in ("v_proj", "q_proj"):
        for j in range(h):
            lin = getattr(mine, proj)
            saved = lin.weight.detach().clone()
            with torch.no_grad():
                lin.weight[j * dh : (j + 1) * dh] += torch.randn(dh, d)  # head j's rows only
            out, _ = call(mine, x)
            out = out.detach()
            with torch.no_grad():
                lin.weight.copy_(saved)
            change = (out - base).abs().amax(dim=(0, 1)).view(h, dh).amax(-1)  # (h,) largest change per head slice
            others = [i for i in range(h) if i != j and change[i] > 1e-6]
            if others:
                fail(f"perturbing head {j}'s rows of {proj}.weight (rows {j * dh}..{(j + 1) * dh - 1}) changed the output"
                     f" of head(s) {others} (largest change per head: {[round(float(c), 4) for c in change]}),"
                     f" with out_proj set to the identity. Each head must see only its own d_head features."
                     + likely(RESHAPE))
            check(change[j] > 1e-4, f"perturbing head {j}'s rows of {proj}.weight did not change head {j}'s output slice"
                  f" (columns {j * dh}..{(j + 1) * dh - 1}); the heads are not laid out as split_heads says")


# ---------------------------------------------------------------- Task 5: the SDPA path


class _CountSDPA(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if getattr(func, "__name__", "") == "scaled_dot_product_attention":
            self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.points(2)
def test_sdpa_path_matches(impl) -> None:
    """use_sdpa=True calls scaled_dot_product_attention and matches the explicit path, masks and gradients included"""
    B, T, d, h = 3, 6, 16, 4
    ref, mine = make_pair(d, h, impl=impl)
    fast = impl.MultiHeadAttention(d, h, use_sdpa=True).eval()
    copy_weights(ref, fast)
    p = params(ref)
    kpm = lengths_mask([6, 4, 3], T)
    fmask = torch.randn(T, T)
    cases = [("no mask", {}, {}), ("is_causal", {"is_causal": True}, {"causal": True}),
             ("padding + causal", {"key_padding_mask": kpm, "is_causal": True}, {"causal": True, "kpm": kpm}),
             ("float attn_mask", {"attn_mask": fmask}, {"bias": fmask})]
    for what, kw, mk in cases:
        x = torch.randn(B, T, d, requires_grad=True)
        counter = _CountSDPA()
        with counter:
            out, w = call(fast, x, **kw)
        check(counter.calls >= 1, f"use_sdpa=True ({what}): torch.nn.functional.scaled_dot_product_attention was never"
              " called (need_weights is False, so the SDPA path must be taken)")
        check(w is None, "with need_weights=False the weights returned should be None")
        x2 = x.detach().clone().requires_grad_(True)
        expected, _ = call(mine, x2, **kw)
        table: dict[str, object] = {}
        if mk.get("kpm") is not None or mk.get("causal"):
            blocked = masks(B, h, T, T, kpm=mk.get("kpm"), causal=mk.get("causal", False))
            empty = blocked.all(-1, keepdim=True)
            table[SDPA_NOT_INVERTED] = lambda blocked=blocked, empty=empty, x=x: manual(
                p, x.detach(), blocked=~(blocked & ~empty), zero_rows=empty)[0]
        check_close(out, expected, what=f"use_sdpa=True versus the explicit path ({what})", mistakes=table)
        g = torch.randn(B, T, d)
        (out * g).sum().backward()
        (expected * g).sum().backward()
        check_close(x.grad, x2.grad, what=f"gradient w.r.t. the input, SDPA path versus explicit path ({what})")
    out, w = call(fast, torch.randn(B, T, d), need_weights=True)
    check(w is not None, "use_sdpa=True with need_weights=True must still return the weights (take the explicit path)")


# ---------------------------------------------------------------- conventions: empty rows, dropout


def test_fully_masked_rows_are_zero(impl) -> None:
    """a query whose keys are all masked returns zeros and zero weights, never NaN, on both paths; gradients stay finite"""
    B, T, d, h = 2, 5, 16, 4
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[0, :2] = True  # left padding + causal: queries 0 and 1 of sequence 0 see nothing
    kpm[1, :] = True  # sequence 1 is all padding
    for use_sdpa in (False, True):
        ref, mine = make_pair(d, h, impl=impl, use_sdpa=use_sdpa)
        p = params(ref)
        x = torch.randn(B, T, d, requires_grad=True)
        out, _ = call(mine, x, key_padding_mask=kpm, is_causal=True)
        blocked = masks(B, h, T, T, kpm=kpm, causal=True)
        empty = blocked.all(-1)[:, 0]  # (B, T) queries that see nothing
        path = "SDPA path" if use_sdpa else "explicit path"
        if torch.isnan(out).any():
            names = matching_mistakes(out, mistake_table(p, x.detach(), B=B, Tq=T, Tk=T, kpm=kpm, causal=True))
            check(not names, f"{path}: the output contains NaN." + likely(*names))
            fail(f"{path}: {int(torch.isnan(out).any(-1).sum())} output rows are NaN. A query whose keys are all masked"
                 " has scores all -inf and softmax gives 0/0 = NaN. The course defines that row as zeros (before"
                 " out_proj): find such rows with blocked.all(dim=-1), unblock them, and zero their output.")
        expected, _ = manual(p, x.detach(), blocked=blocked)
        check_close(out, expected, what=f"{path}: output with fully masked rows (zeros before out_proj, so out_proj's bias after)",
                    reference="§3.2.2 with fully masked rows defined as zero")
        check_close(out.detach()[empty], p["bo"].float().expand(int(empty.sum()), d),
                    what=f"{path}: output of the fully masked queries (must be out_proj(0) = out_proj.bias)")
        (out * torch.randn_like(out)).sum().backward()
        grads = {"x": x.grad, **{n: q.grad for n, q in mine.named_parameters()}}
        bad = [n for n, g in grads.items() if g is None or not bool(torch.isfinite(g).all())]
        check(not bad, f"{path}: gradients of {bad} are missing or contain NaN/inf; zero the empty rows with an"
              " out-of-place masked_fill, and do not let -inf rows reach the softmax.")
    _, w = call(mine, x.detach(), key_padding_mask=kpm, is_causal=True, need_weights=True, average_attn_weights=False)
    check(bool((w.detach().transpose(1, 2)[empty] == 0).all()) and bool(torch.isfinite(w).all()),
          "the attention weights of a fully masked query must be all zero (and finite)")


def test_dropout_in_training_only(impl) -> None:
    """dropout hits the attention weights in training mode only, on both paths; eval mode is deterministic"""
    B, T, d, h, pdrop = 2, 6, 16, 4, 0.5
    for use_sdpa in (False, True):
        path = "SDPA path" if use_sdpa else "explicit path"
        ref, mine = make_pair(d, h, impl=impl, use_sdpa=use_sdpa, dropout=pdrop)
        x = torch.randn(B, T, d)
        # Compared with YOUR module built with dropout=0 (same weights), not with torch: a wrong attention
        # elsewhere is another check's business; this one is only about dropout in eval mode.
        twin = impl.MultiHeadAttention(d, h, dropout=0.0, use_sdpa=use_sdpa).eval()
        twin.load_state_dict(mine.state_dict())
        expected, _ = call(twin, x)
        out1, _ = call(mine, x)
        out2, _ = call(mine, x)
        check(torch.equal(out1, out2), f"{path}: two eval-mode calls differ: dropout must be off in eval mode"
              " (use self.dropout, which knows the mode, and pass dropout_p=0 to SDPA when not self.training)")
        check_close(out1, expected, what=f"{path}: eval-mode output with dropout=0.5 versus your own module with dropout=0"
                    " (dropout must be off in eval mode)")
        mine.train()
        out3, _ = call(mine, x)
        check(not torch.allclose(out3, expected, atol=1e-5),
              f"{path}: train-mode output equals the eval-mode output: dropout is not applied in training mode")
    mine = make_pair(d, h, impl=impl, dropout=pdrop)[1].train()
    _, w_eval = call(mine.eval(), x, need_weights=True, average_attn_weights=False)
    _, w_train = call(mine.train(), x, need_weights=True, average_attn_weights=False)
    kept = w_train != 0
    check(bool((~kept).any()), "with dropout=0.5 some attention weights should be zero in training mode"
          " (dropout acts on the attention weights, and need_weights returns those, as torch does)")
    check_close(w_train[kept], w_eval[kept] / (1 - pdrop), what="kept attention weights in training mode (scaled by 1/(1-p))")


# ---------------------------------------------------------------- devices and precision


def test_mha_on_every_device_and_precision(impl, setting) -> None:
    """both paths (padding + causal) give torch's result on this device / precision"""
    B, T, d, h = 2, 6, 32, 4
    kpm = lengths_mask([6, 4], T)
    x = torch.randn(B, T, d)
    for use_sdpa in (False, True):
        ref, mine = make_pair(d, h, impl=impl, use_sdpa=use_sdpa)
        expected, _ = ref(x, x, x, need_weights=False, **torch_masks(B, h, T, kpm, True))
        mine = setting.module(mine)
        with setting.autocast():
            out, _ = call(mine, setting.tensor(x), key_padding_mask=setting.tensor(kpm), is_causal=True)
        setting.sync()
        check(out.device.type == setting.device, f"output on {out.device}, expected {setting.device}: make masks on x.device")
        check_close(out.float().cpu(), expected, what=f"MultiHeadAttention(use_sdpa={use_sdpa}) on {setting.id}", **setting.tol,
                    mistakes=mistake_table(params(ref), x, B=B, Tq=T, Tk=T, kpm=kpm, causal=True))
