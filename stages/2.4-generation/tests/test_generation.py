"""Graded checks for stage 2.4 — generation and the KV cache.

Reference numerics:
  * sampling: the distributions are computed here from their definitions in float64 (softmax of
    logits / T; the k largest; the smallest most-likely set with mass >= p, taken in a stable
    descending order), one row at a time in plain Python;
  * frequencies: Pearson's chi-square statistic, its p-value from ``torch.special.gammaincc``
    (the regularised upper incomplete gamma function: the chi-square survival function);
  * the KV cache: the uncached stage 2.2 GPT (``GPT.forward``, or with --deps mine your own) on the
    same weights, and ``torch.nn.functional.scaled_dot_product_attention`` for one attention layer.
    A mistake in the cache is recognised by running the uncached model with the learned-position
    rows that mistake uses: a cached computation equals an uncached one whose token at step s used
    the same position row, because each token's keys and values depend only on it and the tokens
    before it.
Every model here is a tiny, randomly initialised GPT (never a trained checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.loader import load_dep
from shared.testing import check, check_close, describe, expect_raises, fail

#: Chi-square false-alarm probability: a correct sampler fails a frequency check with this probability.
ALPHA = 1e-6

# ---------------------------------------------------------------- reference distributions (float64, by definition)


def ref_softmax(row: Sequence[float]) -> list[float]:
    finite = [x for x in row if x != float("-inf")]
    m = max(finite)
    e = [math.exp(x - m) if x != float("-inf") else 0.0 for x in row]
    s = sum(e)
    return [x / s for x in e]


def ref_top_k_set(row: Sequence[float], k: int) -> set[int]:
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))
    return set(order[:k])


def ref_top_p_order(probs: Sequence[float]) -> list[int]:
    """Token ids by decreasing probability, lower id first among equals (a stable descending sort)."""
    return sorted(range(len(probs)), key=lambda i: (-probs[i], i))


def ref_top_p_set(probs: Sequence[float], p: float, extra: int = 0) -> set[int]:
    """The smallest most-likely set with mass >= p (extra = +1 / -1: one token more / fewer, possibly none)."""
    order = ref_top_p_order(probs)
    mass, n = 0.0, 0
    for i in order:
        if mass >= p:
            break
        mass += probs[i]
        n += 1
    n = max(0, min(len(order), n + extra))
    return set(order[:n])


def ref_distribution(
    row: Sequence[float], temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, *,
    temperature_after_softmax: bool = False, top_p_before_temperature: bool = False,
) -> list[float]:  # fmt: skip
    """The exact filtered, renormalised next-token distribution of one row of logits (or a mistake's)."""
    row = [float(x) for x in row]
    tempered = row if temperature_after_softmax else [x / temperature for x in row]
    keep = set(range(len(row)))
    if top_k is not None:
        keep &= ref_top_k_set(tempered, top_k)
    if top_p is not None:
        basis = row if top_p_before_temperature else tempered
        probs = ref_softmax([basis[i] if i in keep else float("-inf") for i in range(len(row))])
        keep &= ref_top_p_set(probs, top_p)
    out = ref_softmax([tempered[i] if i in keep else float("-inf") for i in range(len(row))])
    if temperature_after_softmax:
        out = [x / temperature for x in out]
    return out


def rows_of(x: torch.Tensor) -> list[list[float]]:
    return x.double().reshape(-1, x.size(-1)).tolist()


def kept(x: torch.Tensor) -> torch.Tensor:
    """Which entries a filter kept: finite ones (-inf, or any value so low that softmax gives exactly 0, is removed)."""
    return x.float().softmax(dim=-1) > 0


def mask_of(sets: list[set[int]], V: int) -> torch.Tensor:
    return torch.tensor([[i in s for i in range(V)] for s in sets])


# ---------------------------------------------------------------- a tiny GPT with decisive logits


def tiny_gpt(block_size: int = 12, vocab: int = 40, d: int = 32, layers: int = 2, heads: int = 4, seed: int = 0) -> nn.Module:
    gpt = load_dep("2.2")
    model = gpt.GPT(gpt.GPTConfig(vocab_size=vocab, block_size=block_size, d_model=d, n_layers=layers, n_heads=heads))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # larger than GPT-2's 0.02, so the logits differ clearly and argmax ties are far away
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.dim() > 1 else 0.1))
    return model.eval()


def logits_with_rows(model: nn.Module, ids: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """The uncached model on ``ids`` (B, T), token j using learned-position row rows[j]: (B, T, V).

    With rows = 0..T-1 this is GPT.forward; other rows reproduce what a cache with that position
    mistake computes. Raises IndexError when a row does not exist (that mistake is then not a match).
    """
    table = model.pos_emb.embedding.weight  # (block_size, d)
    if min(rows) < 0 or max(rows) >= table.size(0):
        raise IndexError(f"no learned-position row {max(rows)}")
    x = model.drop(model.tok_emb(ids) + table[torch.tensor(list(rows))])  # (B, T, d)
    for block in model.blocks:
        x = block(x)
    return model.lm_head(model.ln_f(x))  # (B, T, V)


def uncached_last(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """GPT.forward on the last block_size tokens, at the last position: (B, V). The reference for next_logits."""
    logits, _ = model(ids[:, -model.config.block_size :])
    return logits[:, -1]


# ---------------------------------------------------------------- Task 1: temperature


def test_temperature_divides_the_logits(impl) -> None:
    """apply_temperature divides the logits by T (T < 1 sharpens, T > 1 flattens)"""
    logits = torch.randn(3, 7) * 2
    for T in (0.5, 2.0):
        got = impl.apply_temperature(logits, T)
        check_close(got, logits / T, what=f"apply_temperature(logits (3, 7), {T})", reference="logits / T",
                    mistakes={"multiplied by the temperature instead of dividing": logits * T,
                              "softmax taken inside apply_temperature (it returns logits, not probabilities)":
                                  lambda T=T: (logits / T).softmax(-1)})  # fmt: skip


def test_temperature_must_be_positive(impl) -> None:
    """apply_temperature raises ValueError for T <= 0 (T = 0 is greedy, handled by sample_next)"""
    for T in (0.0, -1.0):
        expect_raises(ValueError, impl.apply_temperature, torch.zeros(1, 4), T, what=f"apply_temperature(logits, {T})")


# ---------------------------------------------------------------- Task 2: top-k


@pytest.mark.points(2)
def test_top_k_keeps_exactly_k(impl) -> None:
    """top_k_filter keeps exactly the k largest logits, unchanged, and removes the rest"""
    logits = torch.randn(4, 10) * 2  # distinct values: no ties at the k-th place
    V = logits.size(-1)
    for k in (1, 3, 7, 10, 25):
        got = impl.top_k_filter(logits, k)
        check(isinstance(got, torch.Tensor) and tuple(got.shape) == (4, 10),
              f"top_k_filter(logits (4, 10), {k}) must return the filtered logits, shape (4, 10); got {describe(got)}")  # fmt: skip
        want = mask_of([ref_top_k_set(r, k) for r in rows_of(logits)], V)
        check_close(kept(got), want, what=f"which logits top_k_filter(logits (4, 10), k={k}) keeps (True = kept)", mistakes={
            "kept the k smallest logits instead of the largest": lambda k=k: mask_of([ref_top_k_set([-x for x in r], k) for r in rows_of(logits)], V),
            "kept k + 1 tokens": lambda k=k: mask_of([ref_top_k_set(r, k + 1) for r in rows_of(logits)], V),
            "kept k - 1 tokens": lambda k=k: mask_of([ref_top_k_set(r, k - 1) for r in rows_of(logits)], V),
        })  # fmt: skip
        check_close(got[want], logits[want], what=f"the kept logits of top_k_filter(logits, {k}) (they must be unchanged)")


def test_top_k_rejects_k_below_one(impl) -> None:
    """top_k_filter raises ValueError for k < 1 (nothing would be left to sample)"""
    expect_raises(ValueError, impl.top_k_filter, torch.randn(2, 5), 0, what="top_k_filter(logits, 0)")


# ---------------------------------------------------------------- Task 3: top-p

#: Probabilities whose running sums (0.4, 0.65, 0.8, 0.9, 0.96, 1) stay far from every p below.
NUCLEUS_PROBS = [0.06, 0.4, 0.1, 0.25, 0.04, 0.15]
NUCLEUS_PS = (0.3, 0.5, 0.7, 0.85, 0.93, 0.99, 1.0)


def _nucleus_logits() -> torch.Tensor:
    base = torch.tensor(NUCLEUS_PROBS, dtype=torch.float64).log()
    rows = torch.stack([base, base.flip(0), base[[3, 0, 5, 1, 4, 2]]])  # the same masses, in other id orders
    return (rows + torch.tensor([[0.0], [1.5], [-2.0]], dtype=torch.float64)).float()  # shifts leave softmax as is


@pytest.mark.points(2)
def test_top_p_keeps_the_smallest_set_with_mass_p(impl) -> None:
    """top_p_filter keeps the smallest most-likely set whose mass is >= p, nothing more, nothing less"""
    logits = _nucleus_logits()
    V = logits.size(-1)
    probs = [ref_softmax(r) for r in rows_of(logits)]
    for p in NUCLEUS_PS:
        got = impl.top_p_filter(logits, p)
        check(isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(logits.shape),
              f"top_p_filter(logits (3, 6), {p}) must return the filtered logits, shape (3, 6); got {describe(got)}")  # fmt: skip
        want = mask_of([ref_top_p_set(pr, p) for pr in probs], V)
        masses = ", ".join(f"{m:.2f}" for m in sorted(NUCLEUS_PROBS, reverse=True))
        check_close(kept(got), want, what=f"which tokens top_p_filter(logits, p={p}) keeps (True = kept; the probabilities,"
                    f" largest first, are {masses})", mistakes={
            "top-p keeps one token too few (the token that crosses p was dropped: the kept mass is < p)":
                lambda p=p: mask_of([ref_top_p_set(pr, p, extra=-1) for pr in probs], V),
            "top-p keeps one token too many (the set was already >= p without the last one)":
                lambda p=p: mask_of([ref_top_p_set(pr, p, extra=+1) for pr in probs], V),
        })  # fmt: skip
        check_close(got[want], logits[want], what=f"the kept logits of top_p_filter(logits, {p}) (they must be unchanged)")


def test_top_p_ties_go_to_the_lower_id(impl) -> None:
    """top_p_filter breaks ties between equal probabilities in favour of the lower token id"""
    probs = [[0.2, 0.2, 0.2, 0.2, 0.2], [0.15, 0.15, 0.4, 0.15, 0.15]]
    logits = torch.tensor(probs).log()  # equal logits give exactly equal probabilities
    got = impl.top_p_filter(logits, 0.5)
    V = 5

    def sets(*rows: set[int]) -> torch.Tensor:
        return mask_of(list(rows), V)

    want = sets({0, 1, 2}, {2, 0})
    check_close(kept(got), want, what="top_p_filter(p=0.5) on probabilities [0.2] * 5 and [0.15, 0.15, 0.4, 0.15, 0.15]:"
                " the most likely, then the tied tokens by increasing id until the mass reaches p (sort with stable=True)",
                mistakes={"ties broken towards the higher token id (an unstable or reversed sort)": sets({2, 3, 4}, {2, 4}),
                          "kept every tied token (the set is then not the smallest)": sets({0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}),
                          "top-p keeps one token too many (the set was already >= p without the last one)": sets({0, 1, 2, 3}, {2, 0, 1}),
                          "top-p keeps one token too few (the token that crosses p was dropped: the kept mass is < p)": sets({0, 1}, {2})})  # fmt: skip


def test_top_p_edge_cases(impl) -> None:
    """top_p_filter keeps the most likely token for any p, keeps all at p = 1, rejects p outside (0, 1]"""
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0]])
    got = impl.top_p_filter(logits, 1e-6)
    check_close(kept(got), torch.tensor([[True, False, False, False]]),
                what="top_p_filter(logits, p=1e-6): only the most likely token survives (never nothing)")
    got = impl.top_p_filter(logits, 1.0)
    check_close(kept(got), torch.ones(1, 4, dtype=torch.bool), what="top_p_filter(logits, p=1.0): every token survives")
    for p in (0.0, 1.5):
        expect_raises(ValueError, impl.top_p_filter, logits, p, what=f"top_p_filter(logits, {p})")


# ---------------------------------------------------------------- Task 4: the distribution and sampling

CONFIGS = [  # (temperature, top_k, top_p)
    (1.0, None, None), (0.7, None, None), (1.6, 4, None), (0.8, None, 0.75), (1.3, 5, 0.8),
]  # fmt: skip


@pytest.mark.points(2)
def test_next_token_probs_is_the_exact_filtered_distribution(impl) -> None:
    """next_token_probs: temperature, then top-k, then top-p, renormalised — exactly the filtered distribution"""
    logits = torch.randn(3, 9) * 1.5
    rows = rows_of(logits)
    for T, k, p in CONFIGS:
        got = impl.next_token_probs(logits, T, k, p)
        what = f"next_token_probs(logits (3, 9), temperature={T}, top_k={k}, top_p={p})"
        check(isinstance(got, torch.Tensor) and tuple(got.shape) == (3, 9), f"{what}: expected probabilities of shape (3, 9), got {describe(got)}")
        expected = torch.tensor([ref_distribution(r, T, k, p) for r in rows], dtype=torch.float64)
        mistakes: dict[str, object] = {
            "the softmax (logits, not probabilities) was not taken": lambda: logits,
        }
        if T != 1.0:
            mistakes["temperature applied after the softmax (probabilities divided by T; once renormalised, T changes nothing)"] = (
                lambda T=T, k=k, p=p: torch.tensor([ref_distribution(r, T, k, p, temperature_after_softmax=True) for r in rows])
            )
            mistakes["temperature applied after the softmax, or not at all (the result is the T = 1 distribution)"] = (
                lambda k=k, p=p: torch.tensor([ref_distribution(r, 1.0, k, p) for r in rows])
            )
        if p is not None and T != 1.0:
            mistakes["top-p measured before the temperature (the nucleus of the untempered distribution)"] = (
                lambda T=T, k=k, p=p: torch.tensor([ref_distribution(r, T, k, p, top_p_before_temperature=True) for r in rows])
            )
        check_close(got, expected, what=what, atol=1e-6, rtol=1e-5, reference="softmax(logits / T) over the kept tokens, in float64",
                    mistakes=mistakes)  # fmt: skip


def test_temperature_to_zero_is_greedy(impl) -> None:
    """sample_next with temperature 0 is greedy (the argmax), and temperature -> 0 tends to it"""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 11)
    top = base.argmax(dim=-1)
    logits = base.scatter(-1, top[:, None], base.max(dim=-1, keepdim=True).values + 0.5)  # the best leads by >= 0.5
    got = impl.sample_next(logits, temperature=0.0)
    check(isinstance(got, torch.Tensor) and tuple(got.shape) == (6,), f"sample_next(logits (6, 11), temperature=0) must return (6,) ids; got {describe(got)}")
    check(got.dtype == torch.int64, f"token ids must be int64 (torch.long), got {got.dtype}")
    check_close(got, top, what="sample_next(logits, temperature=0): greedy decoding, the argmax of each row", reference="torch.argmax")
    got = impl.sample_next(logits, temperature=1e-3, generator=gen)
    check_close(got, top, what="sample_next(logits, temperature=0.001): with the best logit 0.5 ahead, T -> 0 leaves only the argmax")
    probs = impl.next_token_probs(logits, 1e-3)
    check_close(probs, F.one_hot(top, 11).double(), what="next_token_probs(logits, temperature=0.001): one-hot at the argmax", atol=1e-6)


def _chi_square(counts: torch.Tensor, probs: Sequence[float]) -> tuple[float, float]:
    """Pearson's statistic over the tokens with probability > 0, and its p-value (df = kept - 1)."""
    n = float(counts.sum())
    idx = [i for i, q in enumerate(probs) if q > 0]
    stat = sum((float(counts[i]) - n * probs[i]) ** 2 / (n * probs[i]) for i in idx)
    df = max(len(idx) - 1, 1)
    pval = float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), torch.tensor(stat / 2, dtype=torch.float64)))
    return stat, pval


@pytest.mark.points(3)
def test_samples_follow_the_filtered_distribution(impl) -> None:
    """with a seeded generator, 20000 draws match the exact filtered distribution (chi-square, false alarm 1e-6)"""
    N = 20000
    row = [2.5, 0.4, 1.7, 3.1, 0.9, 2.2, 1.1, 0.2]  # positive logits: sampling them as if they were probabilities "works"
    logits = torch.tensor([row]).expand(N, -1)
    for i, (T, k, p) in enumerate([(1.0, None, None), (0.6, None, None), (1.4, 5, None), (0.9, None, 0.8), (1.2, 6, 0.9)]):
        gen = torch.Generator().manual_seed(1234 + i)
        got = impl.sample_next(logits, temperature=T, top_k=k, top_p=p, generator=gen)
        what = f"sample_next on logits {row} with temperature={T}, top_k={k}, top_p={p}"
        check(isinstance(got, torch.Tensor) and tuple(got.shape) == (N,), f"{what}: expected {N} ids, shape ({N},); got {describe(got)}")
        counts = torch.bincount(got.long().flatten().clamp(0, len(row) - 1), minlength=len(row)).double()
        expected = ref_distribution(row, T, k, p)
        banned = [j for j, q in enumerate(expected) if q == 0 and counts[j] > 0]
        shown = ", ".join(f"{int(c)}" for c in counts.tolist())
        exp_shown = ", ".join(f"{N * q:.0f}" for q in expected)
        if banned:
            fail(f"{what}: drew tokens {banned}, which the filters removed (probability 0)\n"
                 f"  counts per token:   [{shown}]\n  expected (about):   [{exp_shown}]")  # fmt: skip
        stat, pval = _chi_square(counts, expected)
        if pval < ALPHA:
            candidates = {
                "sampling from logits instead of probabilities (torch.multinomial on the raw logits)":
                    [x / sum(row) for x in row] if (T, k, p) == (1.0, None, None) else None,
                "temperature applied after the softmax, or not at all (the draws follow the T = 1 distribution)":
                    ref_distribution(row, 1.0, k, p) if T != 1.0 else None,
                "no top-k / top-p filtering in sample_next": ref_distribution(row, T) if (k or p) else None,
            }  # fmt: skip
            named = [name for name, q in candidates.items() if q is not None and _chi_square(counts, q)[1] > 1e-3]
            hint = f"\n  Likely mistake: {named[0]} (the counts fit that distribution)." if len(named) == 1 else ""
            fail(f"{what}: the frequencies do not match the exact filtered distribution (chi-square {stat:.1f},"
                 f" p-value {pval:.2g} < {ALPHA:g})\n  counts per token:   [{shown}]\n  expected (about):   [{exp_shown}]{hint}")  # fmt: skip


def test_sampling_uses_the_generator(impl) -> None:
    """sample_next draws from the generator it is given: the same seed gives the same tokens, the global RNG is untouched"""
    logits = torch.randn(200, 12)
    a = impl.sample_next(logits, temperature=1.0, generator=torch.Generator().manual_seed(7))
    b = impl.sample_next(logits, temperature=1.0, generator=torch.Generator().manual_seed(7))
    check(torch.equal(a, b), "two calls of sample_next with generators seeded alike drew different tokens: pass generator= to torch.multinomial")
    torch.manual_seed(99)
    before = torch.get_rng_state()
    impl.sample_next(logits, temperature=0.8, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(1))
    check(torch.equal(before, torch.get_rng_state()),
          "sample_next(..., generator=g) changed the global RNG: draw from the generator (torch.multinomial(..., generator=g)), so --seed reproduces a run")  # fmt: skip


# ---------------------------------------------------------------- Task 5: cropping


def test_crop_context_keeps_the_last_block_size_tokens(impl) -> None:
    """crop_context keeps the last block_size tokens (all of them when the sequence is shorter)"""
    ids = torch.arange(20).view(2, 10)
    got = impl.crop_context(ids, 4)
    check_close(got, ids[:, -4:], what="crop_context(ids (2, 10), 4)", mistakes={
        "kept the first block_size tokens instead of the last": ids[:, :4]})  # fmt: skip
    check_close(impl.crop_context(ids, 16), ids, what="crop_context(ids (2, 10), 16): a short sequence is kept whole")


# ---------------------------------------------------------------- Task 6: the cache


def test_kv_cache_appends_along_time(impl) -> None:
    """KVCache.update appends new keys and values along the time axis, per layer; length counts positions"""
    cache = impl.KVCache(2)
    check(cache.length == 0, f"a new KVCache must have length 0, got {cache.length}")
    k1, v1 = torch.randn(2, 4, 3, 8), torch.randn(2, 4, 3, 8)  # (B, nh, t, hs)
    k, v = cache.update(0, k1, v1)
    check_close(k, k1, what="keys returned by the first update of layer 0 (B, nh, t, hs)")
    check_close(v, v1, what="values returned by the first update of layer 0")
    cache.update(1, k1 * 2, v1 * 2)
    check(cache.length == 3, f"after caching 3 positions, length must be 3, got {cache.length}")
    k2, v2 = torch.randn(2, 4, 1, 8), torch.randn(2, 4, 1, 8)
    k, v = cache.update(0, k2, v2)
    check_close(k, torch.cat([k1, k2], dim=2), what="keys after a second update: the old 3 positions then the new one, (2, 4, 4, 8)",
                mistakes={"the new keys replaced the old ones instead of being appended": k2})
    check_close(v, torch.cat([v1, v2], dim=2), what="values after a second update (2, 4, 4, 8)")
    k, _ = cache.update(1, k2, v2)
    check_close(k, torch.cat([k1 * 2, k2], dim=2), what="layer 1's keys: each layer keeps its own", mistakes={
        "all layers share one list of keys": torch.cat([k1, k2, k2], dim=2)})  # fmt: skip
    check(cache.length == 4, f"after 4 positions in every layer, length must be 4, got {cache.length}")
    cache.reset()
    check(cache.length == 0, f"after reset(), length must be 0, got {cache.length}")


# ---------------------------------------------------------------- Task 7: the cached forward step


def test_cached_attention_matches_full_causal_attention(impl) -> None:
    """cached_attention of new positions over the cache equals full causal attention at those positions"""
    mha = load_dep("1.4").MultiHeadAttention(16, 4).eval()
    with torch.no_grad():
        x = torch.randn(2, 7, 16)
        full, _ = mha(x, is_causal=True)  # (2, 7, 16) the uncached reference
        cache = impl.KVCache(1)
        first = impl.cached_attention(mha, x[:, :4], cache, 0)  # a 4-token prefill
        check_close(first, full[:, :4], what="cached_attention on an empty cache (prefill of 4 positions) (2, 4, 16)",
                    reference="MultiHeadAttention(x, is_causal=True)", mistakes={
                        "no causal mask in the prefill (early positions see later ones)": lambda: mha(x[:, :4])[0]})  # fmt: skip
        rest = impl.cached_attention(mha, x[:, 4:], cache, 0)  # 3 more at once, over 4 cached positions

        def top_left() -> torch.Tensor:  # the mask of a square (t, t) causal attention laid over (t, P + t) keys
            q = mha.q_proj(x[:, 4:]).view(2, 3, 4, 4).transpose(1, 2)  # (B, nh, t, hs)
            k = mha.k_proj(x).view(2, 7, 4, 4).transpose(1, 2)  # (B, nh, P + t, hs)
            v = mha.v_proj(x).view(2, 7, 4, 4).transpose(1, 2)
            blocked = torch.ones(3, 7, dtype=torch.bool).triu(1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=~blocked)  # (B, nh, t, hs)
            return mha.out_proj(out.transpose(1, 2).reshape(2, 3, 16))  # (B, t, d)

        check_close(rest, full[:, 4:], what="cached_attention of 3 new positions over 4 cached ones (2, 3, 16)",
                    reference="MultiHeadAttention(x, is_causal=True)", mistakes={
                        "the causal mask is not shifted by the cached positions (new query i must see keys 0 .. P+i;"
                        " SDPA's is_causal=True aligns it to the first key when there are more keys than queries)": top_left})  # fmt: skip
        check(cache.length == 7, f"after 4 + 3 positions the cache must hold 7, got {cache.length}")


@pytest.mark.points(2)
def test_prefill_matches_the_model(impl) -> None:
    """forward_step on an empty cache (the prefill) gives the model's own logits and caches every layer"""
    model = tiny_gpt()
    ids = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        expected, _ = model(ids)  # (2, 9, V)
        cache = impl.KVCache(len(model.blocks))
        got = impl.forward_step(model, ids, cache)
        check_close(got, expected, what="forward_step(model, ids (2, 9), empty cache) (2, 9, V)", reference="GPT.forward", mistakes={
            "cache positions off by one: the tokens got learned-position rows 1 .. T instead of 0 .. T-1":
                lambda: logits_with_rows(model, ids, range(1, 10)),
        })  # fmt: skip
    check(cache.length == 9, f"after the prefill of 9 tokens the cache must hold 9 positions, got {cache.length}")
    for i in range(len(model.blocks)):  # (B, nh, P, hs); a preallocated buffer may hold more positions than P
        k, v = cache.keys[i], cache.values[i]
        ok = all(x is not None and x.dim() == 4 and tuple(x.shape[:2]) == (2, 4) and x.size(2) >= 9 and x.size(3) == 8 for x in (k, v))
        check(ok, f"layer {i}'s cached keys and values must be (B, nh, T, hs) = (2, 4, 9, 8); got {describe(k)} and {describe(v)}")


def _step_mistakes(model: nn.Module, ids: torch.Tensor, T0: int) -> dict[str, Callable[[], torch.Tensor]]:
    """What each position mistake gives for the steps after a T0-token prefill: (steps, B, V)."""
    T = ids.size(1)

    def steps_with(rows: list[int]) -> Callable[[], torch.Tensor]:
        return lambda: logits_with_rows(model, ids, rows)[:, T0 - 1 :].transpose(0, 1)

    return {
        "cache positions off by one: the new token at position P got learned-position row P+1": steps_with(list(range(T0)) + list(range(T0 + 1, T + 1))),
        "cache positions off by one: the new token at position P got learned-position row P-1": steps_with(list(range(T0)) + list(range(T0 - 1, T - 1))),
        "every step used learned-position row 0 (pos_emb on the one-token input restarts at 0); use row P = cache.length":
            steps_with(list(range(T0)) + [0] * (T - T0)),
        "cache positions off by one: every token got row p+1 (rows 1, 2, ...)": steps_with(list(range(1, T + 1))),
    }  # fmt: skip


@pytest.mark.points(3)
def test_cached_steps_match_the_uncached_model(impl) -> None:
    """each cached one-token step gives the uncached model's logits, and the cache grows by one position per step"""
    model = tiny_gpt(block_size=12)
    T0, T = 4, 11  # prefill 4 tokens, then 7 steps (the last one lands at position 10 < block_size)
    ids = torch.randint(0, 40, (2, T))
    with torch.no_grad():
        full, _ = model(ids)  # (2, T, V): position t's logits predict token t+1
        cache = impl.KVCache(len(model.blocks))
        first = impl.forward_step(model, ids[:, :T0], cache)  # (2, T0, V)
        got = [first[:, -1]]
        for t in range(T0, T):
            out = impl.forward_step(model, ids[:, t : t + 1], cache)
            check(tuple(out.shape) == (2, 1, 40), f"forward_step on one new token must return (B, 1, V) = (2, 1, 40), got {describe(out)}")
            check(cache.length == t + 1, f"after feeding the token at position {t} the cache must hold {t + 1} positions, got"
                  f" {cache.length} (it must grow by exactly one position per step)")  # fmt: skip
            k = cache.keys[len(model.blocks) - 1]
            check(k is not None and k.size(2) >= t + 1, f"the last layer's cached keys must cover {t + 1} positions, got {describe(k)}")
            got.append(out[:, -1])
        check_close(torch.stack(got), full[:, T0 - 1 :].transpose(0, 1),
                    what=f"the logits after the {T0}-token prefill and each of {T - T0} cached steps (steps, B, V)", reference="GPT.forward on the whole prefix",
                    mistakes=_step_mistakes(model, ids, T0))  # fmt: skip


def test_forward_step_refuses_to_pass_block_size(impl) -> None:
    """forward_step raises ValueError when the cache is full (there is no learned-position row for position block_size)"""
    model = tiny_gpt(block_size=6)
    cache = impl.KVCache(len(model.blocks))
    with torch.no_grad():
        impl.forward_step(model, torch.randint(0, 40, (1, 6)), cache)
        expect_raises((ValueError, IndexError), impl.forward_step, model, torch.randint(0, 40, (1, 1)), cache,
                      what="forward_step with a full cache (6 of block_size=6 positions) and one more token")  # fmt: skip


# ---------------------------------------------------------------- Task 8: the next logits, past block_size


def _run_next_logits(impl, model: nn.Module, ids: torch.Tensor, T0: int, use_cache: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """next_logits on ids[:, :L] for L = T0 .. T (teacher forcing), against GPT.forward on the cropped context."""
    bs = model.config.block_size
    cache = impl.KVCache(len(model.blocks)) if use_cache else None
    got, want = [], []
    mode = "with a KVCache" if use_cache else "without a cache"
    for L in range(T0, ids.size(1) + 1):
        try:
            out = impl.next_logits(model, ids[:, :L], cache)
        except (ValueError, IndexError) as exc:
            if L <= bs:
                raise
            if use_cache:
                fail(f"next_logits {mode} raised {type(exc).__name__} at sequence length {L} = block_size + {L - bs}: {exc}\n"
                     "  Likely mistake: the cache was not cropped: past block_size the window slides, every kept token moves to a new"
                     " position, so reset the cache and prefill the last block_size tokens")  # fmt: skip
            fail(f"next_logits {mode} raised {type(exc).__name__} at sequence length {L} = block_size + {L - bs}: {exc}\n"
                 "  Likely mistake: the context was not cropped to block_size (use crop_context: the model has no position past it)")  # fmt: skip
        check(tuple(out.shape) == (ids.size(0), model.config.vocab_size),
              f"next_logits(model, ids (B, {L}), ...) must return (B, V) = ({ids.size(0)}, {model.config.vocab_size}), got {describe(out)}")  # fmt: skip
        got.append(out)
        want.append(uncached_last(model, ids[:, :L]))
    return got, want


@pytest.mark.points(2)
def test_next_logits_past_block_size_equal_uncached_with_cropping(impl) -> None:
    """next_logits, cached and uncached, equal the model on the last block_size tokens at every step, also past block_size"""
    model = tiny_gpt(block_size=8)
    ids = torch.randint(0, 40, (2, 21))  # up to 13 tokens past block_size
    with torch.no_grad():
        for use_cache in (False, True):
            got, want = _run_next_logits(impl, model, ids, 3, use_cache)
            mode = "with a KVCache" if use_cache else "without a cache"
            mistakes = {"kept the first block_size tokens instead of the last": lambda: torch.stack(
                [uncached_last(model, ids[:, : min(L, 8)]) for L in range(3, 22)])}  # fmt: skip
            check_close(torch.stack(got), torch.stack(want), what=f"next_logits {mode} on ids[:, :L] for L = 3 .. 21 (block_size 8), (steps, B, V)",
                        reference="GPT.forward on the last block_size tokens", mistakes=mistakes)  # fmt: skip


# ---------------------------------------------------------------- Task 9: the generation loop


@pytest.mark.points(2)
def test_greedy_generation_cached_equals_uncached(impl) -> None:
    """greedy generation gives the same tokens with and without the cache, as a plain argmax loop does, past block_size too"""
    model = tiny_gpt(block_size=10)
    prompt = torch.randint(0, 40, (2, 4))
    with torch.no_grad():
        ref = prompt
        for _ in range(16):  # the reference: argmax of GPT.forward on the cropped context
            ref = torch.cat([ref, uncached_last(model, ref).argmax(-1, keepdim=True)], dim=1)
        for use_cache in (False, True):
            got = impl.generate(model, prompt, 16, temperature=0.0, use_cache=use_cache)
            check(isinstance(got, torch.Tensor) and tuple(got.shape) == (2, 20),
                  f"generate(model, prompt (2, 4), 16, temperature=0) must return prompt + 16 tokens, (2, 20); got {describe(got)}")  # fmt: skip
            check_close(got, ref, what=f"greedy generate (use_cache={use_cache}) from a (2, 4) prompt, 16 tokens (block_size 10)",
                        reference="argmax of GPT.forward on the last block_size tokens, step by step")  # fmt: skip


def test_the_cache_feeds_one_token_per_step(impl) -> None:
    """with use_cache, the prompt is read once and then each step feeds only the newest token"""
    model = tiny_gpt(block_size=16)
    seen: list[int] = []  # the first layer's query projection sees every token a forward processes
    hook = model.blocks[0].attn.q_proj.register_forward_hook(lambda m, inp, out: seen.append(int(inp[0].size(1))))
    try:
        with torch.no_grad():
            impl.generate(model, torch.randint(0, 40, (1, 5)), 8, temperature=0.0, use_cache=True)
    finally:
        hook.remove()
    expected = [5] + [1] * 7  # the prefill, then one new token per step (the 8th token needs no forward)
    hint = ""
    if seen == list(range(5, 13)):
        hint = "\n  Likely mistake: use_cache is ignored: every step runs the whole sequence again"
    check(seen == expected, f"tokens through the first layer's attention per forward while generating 8 tokens from a 5-token prompt with the cache:"
          f" expected {expected}, got {seen}{hint}")  # fmt: skip


class _Scripted(nn.Module):
    """A stand-in model whose next token is scripted per row and step (only GPT.forward's contract)."""

    def __init__(self, script: list[list[int]], prompt_len: int, vocab: int = 10) -> None:
        super().__init__()
        self.config = type("Config", (), {"block_size": 64, "vocab_size": vocab})()
        self.blocks = nn.ModuleList()
        self.script, self.prompt_len, self.vocab = script, prompt_len, vocab

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        B, T = ids.shape
        step = T - self.prompt_len
        logits = torch.zeros(B, T, self.vocab)
        for b in range(B):
            logits[b, -1, self.script[b][min(step, len(self.script[b]) - 1)]] = 10.0
        return logits, None


def test_generation_stops_at_end_of_text_or_max_new_tokens(impl) -> None:
    """generation stops once every row has produced end-of-text (rows that finished repeat it), or after max_new_tokens"""
    EOS = 9
    script = [[3, 4, EOS, 5, 6, 7, 8], [5, 5, 5, 5, EOS, 1, 2]]
    prompt = torch.tensor([[1, 2], [2, 1]])
    model = _Scripted(script, prompt_len=2)
    got = impl.generate(model, prompt, 10, temperature=0.0, eos_id=EOS, use_cache=False)
    expected = torch.tensor([[1, 2, 3, 4, EOS, EOS, EOS], [2, 1, 5, 5, 5, 5, EOS]])
    mistakes = {
        "kept generating after every row had finished (stop when all rows have produced eos_id)":
            torch.tensor([[1, 2, 3, 4] + [EOS] * 8, [2, 1, 5, 5, 5, 5] + [EOS] * 6]),
        "stopped when the first row finished instead of when every row had": torch.tensor([[1, 2, 3, 4, EOS], [2, 1, 5, 5, 5]]),
        "a finished row kept its own tokens instead of repeating eos_id": torch.tensor([[1, 2, 3, 4, EOS, 5, 6], [2, 1, 5, 5, 5, 5, EOS]]),
    }  # fmt: skip
    check_close(got, expected, what="generate(..., 10, eos_id=9) with rows that finish after 3 and 5 tokens",
                mistakes=mistakes)  # fmt: skip
    got = impl.generate(model, prompt, 3, temperature=0.0, eos_id=EOS, use_cache=False)
    check_close(got, torch.tensor([[1, 2, 3, 4, EOS], [2, 1, 5, 5, 5]]), what="generate(..., max_new_tokens=3): exactly 3 new tokens")
    tokens = list(impl.generate_stream(model, prompt, 10, temperature=0.0, eos_id=None, use_cache=False))
    check(len(tokens) == 10 and all(tuple(t.shape) == (2,) for t in tokens),
          f"generate_stream without eos_id must yield max_new_tokens=10 tensors of shape (B,) = (2,); got {len(tokens)}:"
          f" {[describe(t) for t in tokens[:3]]}")  # fmt: skip


# ---------------------------------------------------------------- devices and precision


def test_cached_steps_on_every_device_and_precision(impl, setting) -> None:
    """the prefill and cached steps match the uncached model on this device / precision"""
    model = setting.module(tiny_gpt(block_size=12))
    ids = setting.tensor(torch.randint(0, 40, (2, 8)))
    with torch.no_grad():
        with setting.autocast():
            cache = impl.KVCache(len(model.blocks))
            got = [impl.forward_step(model, ids[:, :5], cache)[:, -1]]
            for t in range(5, 8):
                got.append(impl.forward_step(model, ids[:, t : t + 1], cache)[:, -1])
        setting.sync()
        check(got[-1].device.type == setting.device, f"logits on {got[-1].device}, expected {setting.device}")
        expected, _ = model.float()(ids)  # fp32 reference on the same device
    check_close(torch.stack(got).float().cpu(), expected[:, 4:].transpose(0, 1).float().cpu(),
                what=f"prefill + 3 cached steps on {setting.id} (steps, B, V)", reference="GPT.forward in float32", **setting.tol)  # fmt: skip
