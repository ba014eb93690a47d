"""Graded checks for stage 1.6 — the Transformer block and the full encoder–decoder.

Reference numerics:
  * blocks and stacks: ``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer`` and
    ``torch.nn.TransformerEncoder`` / ``TransformerDecoder`` (batch_first=True, activation="gelu",
    dropout=0.0), with random weights copied into your modules by name;
  * the full model: a hand-composed reference from torch modules with the same weights —
    ``torch.nn.Embedding`` x sqrt(d_model) + the paper's sinusoidal table (§3.5, computed here in
    float64), torch's encoder and decoder stacks, ``torch.nn.Linear``;
  * named mistakes: the same torch submodules recomposed the mistaken way (``_block_ref`` below);
  * decoding and learning: properties (causality, equivariance, EOS handling with a forced output
    layer and a scripted decoder, exact match on held-out sequences after training).
Masks: True means "blocked" everywhere, as in torch.nn.MultiheadAttention's masks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.testing import check, check_close, covers, declare_parts, fail, likely

D, H, FF = 16, 4, 32  # d_model, heads and feed-forward width of the small test modules
NORM_FIRST = [pytest.param(False, id="post-LN"), pytest.param(True, id="pre-LN")]

# ---------------------------------------------------------------- copying torch's weights into yours


def _attn_pairs(mine: str, theirs: str) -> list[tuple[str, str, int | None]]:
    """(your parameter, torch's parameter, which third of in_proj) for one attention module."""
    pairs: list[tuple[str, str, int | None]] = []
    for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):  # in_proj_weight is [W_q; W_k; W_v] stacked
        pairs += [
            (f"{mine}.{proj}.weight", f"{theirs}.in_proj_weight", i),
            (f"{mine}.{proj}.bias", f"{theirs}.in_proj_bias", i),
        ]
    pairs += [
        (f"{mine}.out_proj.weight", f"{theirs}.out_proj.weight", None),
        (f"{mine}.out_proj.bias", f"{theirs}.out_proj.bias", None),
    ]
    return pairs


def block_pairs(kind: str) -> list[tuple[str, str, int | None]]:
    """Your EncoderBlock / DecoderBlock parameter names against torch's Transformer*Layer names."""
    pairs = _attn_pairs("self_attn", "self_attn")
    if kind == "decoder":
        pairs += _attn_pairs("cross_attn", "multihead_attn")
    for lin in ("linear1", "linear2"):
        pairs += [
            (f"feed_forward.{lin}.weight", f"{lin}.weight", None),
            (f"feed_forward.{lin}.bias", f"{lin}.bias", None),
        ]
    for k in range(1, 4 if kind == "decoder" else 3):
        pairs += [
            (f"sublayer{k}.norm.weight", f"norm{k}.weight", None),
            (f"sublayer{k}.norm.bias", f"norm{k}.bias", None),
        ]
    return pairs


def _get(module: nn.Module, dotted: str, where: str) -> torch.Tensor:
    obj: object = module
    for part in dotted.split("."):
        nxt = (
            obj[int(part)]
            if part.isdigit() and isinstance(obj, nn.ModuleList) and int(part) < len(obj)
            else getattr(obj, part, None)
        )
        if nxt is None:
            fail(
                f"{where}: has no '{dotted}' (stopped at '{part}'). The checks copy torch's weights into your module by"
                " name, so keep the submodule names the docstring gives (self_attn, cross_attn, feed_forward,"
                " sublayer1..3, layers, norm, src_embed, tgt_embed, lm_head)."
            )
        obj = nxt
    if not isinstance(obj, torch.Tensor):
        fail(f"{where}: '{dotted}' is a {type(obj).__name__}, expected a parameter tensor")
    return obj  # type: ignore[return-value]


def copy_weights(mine: nn.Module, theirs: nn.Module, pairs: list[tuple[str, str, int | None]], where: str) -> None:
    """Copy each torch parameter (or a third of in_proj) into the named parameter of your module."""
    with torch.no_grad():
        for m_name, t_name, third in pairs:
            src = _get(theirs, t_name, "torch reference")
            if third is not None:
                d = src.shape[0] // 3
                src = src[third * d : (third + 1) * d]
            dst = _get(mine, m_name, where)
            if tuple(dst.shape) != tuple(src.shape):
                fail(f"{where}: '{m_name}' has shape {tuple(dst.shape)}, torch's '{t_name}' has {tuple(src.shape)}")
            dst.copy_(src)


def copy_stack(mine: nn.Module, theirs: nn.Module, kind: str, n_layers: int, where: str) -> None:
    """Copy torch's TransformerEncoder / Decoder into your Encoder / Decoder (the final norm if both have one)."""
    pairs = [(f"layers.{i}.{m}", f"layers.{i}.{t}", c) for i in range(n_layers) for m, t, c in block_pairs(kind)]
    if getattr(theirs, "norm", None) is not None and getattr(mine, "norm", None) is not None:
        pairs += [("norm.weight", "norm.weight", None), ("norm.bias", "norm.bias", None)]
    copy_weights(mine, theirs, pairs, where)


def randomize(module: nn.Module) -> nn.Module:
    """Random weights everywhere (LayerNorm gains near 1), so no two layers or norms are alike."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[-1]))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return module


def torch_layer(kind: str, norm_first: bool, d: int = D) -> nn.Module:
    cls = nn.TransformerEncoderLayer if kind == "encoder" else nn.TransformerDecoderLayer
    layer = cls(d, H, dim_feedforward=FF, dropout=0.0, activation="gelu", batch_first=True, norm_first=norm_first)
    return randomize(layer).train()  # train(): no inference fast path, plain math (dropout is 0)


def causal_mask(T: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, T) bool, True above the diagonal: position t may not attend to positions after t."""
    return torch.ones(T, T, dtype=torch.bool, device=device).triu(1)


def padding(lengths: list[int], T: int) -> torch.Tensor:
    """(B, T) bool key padding mask, True at the padded tail of each row."""
    return torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]


# ---------------------------------------------------------------- the same torch layers, recomposed (for mistakes)


def _block_ref(
    layer: nn.Module,
    x: torch.Tensor,
    memory: torch.Tensor | None = None,
    *,
    norm_first: bool,
    self_pad: torch.Tensor | None = None,
    mem_pad: torch.Tensor | None = None,
    causal: bool | None = None,
    cross_on_self: bool = False,
) -> torch.Tensor:
    """torch's layer math written out, with switches that reproduce named mistakes."""
    decoder = memory is not None
    causal = decoder if causal is None else causal
    am = causal_mask(x.size(1)) if causal else None

    def sa(h: torch.Tensor) -> torch.Tensor:
        return layer.self_attn(h, h, h, attn_mask=am, key_padding_mask=self_pad, need_weights=False)[0]

    def ca(h: torch.Tensor) -> torch.Tensor:
        kv, pad = (h, None) if cross_on_self else (memory, mem_pad)
        return layer.multihead_attn(h, kv, kv, key_padding_mask=pad, need_weights=False)[0]

    def ff(h: torch.Tensor) -> torch.Tensor:
        return layer.linear2(F.gelu(layer.linear1(h)))

    subs: list[tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module]] = [(sa, layer.norm1)]
    subs += [(ca, layer.norm2), (ff, layer.norm3)] if decoder else [(ff, layer.norm2)]
    for f, norm in subs:
        x = x + f(norm(x)) if norm_first else norm(x + f(x))
    return x


def _ln_name(norm_first: bool) -> str:
    return "post-LN (norm_first=False)" if not norm_first else "pre-LN (norm_first=True)"


MIXED_UP = "pre-LN and post-LN mixed up (norm_first not passed on to SublayerConnection, whose default is pre-LN?)"
NOT_CAUSAL = "decoder self-attention not causal (future positions visible): pass is_causal=True"
CROSS_ON_SELF = "cross-attention attends to the decoder's own states instead of the encoder memory"
NO_MEM_PAD = "source padding mask not passed to cross-attention (memory_key_padding_mask)"
NO_FINAL_NORM = "missing final LayerNorm in a pre-LN stack"
EXTRA_FINAL_NORM = "final LayerNorm added to a post-LN stack (its blocks already end in a norm)"
SHARED_LAYERS = "the same block repeated (shared weights) instead of n independent blocks"
NO_POS = "positional encoding missing"
FIRST_POS = "next token read from the first position (logits[:, 0]) instead of the last (logits[:, -1])"
FEED_LAST = "greedy_decode feeds the decoder only the last token instead of the whole prefix (decode(ys, ...), not decode(ys[:, -1:], ...))"

# The part of the learner's code each mistake lives in: a passing check that covers the part rules it out.
declare_parts({NOT_CAUSAL: "decoder self-attention's causal mask", CROSS_ON_SELF: "cross-attention's keys and values",
               FIRST_POS: "greedy_decode", FEED_LAST: "greedy_decode"})

# ---------------------------------------------------------------- Task 1: EncoderBlock


@pytest.mark.points(2)
@pytest.mark.parametrize("norm_first", NORM_FIRST)
def test_encoder_block_matches_torch(impl, norm_first: bool) -> None:
    """EncoderBlock equals torch's TransformerEncoderLayer (same weights, with a padding mask)"""
    layer = torch_layer("encoder", norm_first)
    block = impl.EncoderBlock(D, H, d_ff=FF, dropout=0.0, norm_first=norm_first).eval()
    what = f"EncoderBlock({D}, {H}, d_ff={FF}, norm_first={norm_first})"
    copy_weights(block, layer, block_pairs("encoder"), what)
    x, pad = torch.randn(3, 6, D), padding([6, 4, 2], 6)
    expected = layer(x, src_key_padding_mask=pad)
    got = block(x, src_key_padding_mask=pad)
    check_close(
        got,
        expected,
        what=f"{what} on x (3, 6, {D}) with src_key_padding_mask, {_ln_name(norm_first)}",
        reference="torch.nn.TransformerEncoderLayer(batch_first=True, activation='gelu')",
        mistakes={
            MIXED_UP: lambda: _block_ref(layer, x, norm_first=not norm_first, self_pad=pad),
            "src_key_padding_mask not passed to self-attention": lambda: _block_ref(layer, x, norm_first=norm_first),
            "encoder self-attention masked causally (the encoder sees the whole source)": (
                lambda: _block_ref(layer, x, norm_first=norm_first, self_pad=pad, causal=True)
            ),
        },
    )


@torch.no_grad()
def test_encoder_block_is_permutation_equivariant(impl) -> None:
    """EncoderBlock is permutation-equivariant: shuffled tokens in, the same shuffle out"""
    block = randomize(impl.EncoderBlock(D, H, d_ff=FF, norm_first=True)).eval()
    x, pad = torch.randn(2, 7, D), padding([7, 5], 7)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    out = block(x, src_key_padding_mask=pad)
    out_perm = block(x[:, perm], src_key_padding_mask=pad[:, perm])
    diff = float((out_perm - out[:, perm]).abs().max())
    if diff > 1e-4:
        fail(
            "EncoderBlock(x[:, perm]) should equal EncoderBlock(x)[:, perm] for any permutation of the positions"
            f" (attention and the feed-forward treat tokens as a set); largest difference {diff:.4g}."
            + likely("encoder self-attention masked causally (the encoder sees the whole source)",
                     "position information added inside the block")
        )


# ---------------------------------------------------------------- Task 2: DecoderBlock


@pytest.mark.points(2)
@pytest.mark.parametrize("norm_first", NORM_FIRST)
def test_decoder_block_matches_torch(impl, norm_first: bool) -> None:
    """DecoderBlock equals torch's TransformerDecoderLayer (same weights, causal, with padding)"""
    layer = torch_layer("decoder", norm_first)
    block = impl.DecoderBlock(D, H, d_ff=FF, dropout=0.0, norm_first=norm_first).eval()
    what = f"DecoderBlock({D}, {H}, d_ff={FF}, norm_first={norm_first})"
    copy_weights(block, layer, block_pairs("decoder"), what)
    x, memory = torch.randn(2, 5, D), torch.randn(2, 7, D)
    tgt_mask = causal_mask(5)
    # 1) no padding: target length 5, source length 7
    expected = layer(x, memory, tgt_mask=tgt_mask)
    got = block(x, memory)
    check_close(
        got,
        expected,
        what=f"{what} on x (2, 5, {D}), memory (2, 7, {D}), {_ln_name(norm_first)}",
        reference="torch.nn.TransformerDecoderLayer(batch_first=True, activation='gelu') with a causal tgt_mask",
        mistakes={
            NOT_CAUSAL: lambda: _block_ref(layer, x, memory, norm_first=norm_first, causal=False),
            CROSS_ON_SELF: lambda: _block_ref(layer, x, memory, norm_first=norm_first, cross_on_self=True),
            MIXED_UP: lambda: _block_ref(layer, x, memory, norm_first=not norm_first),
        },
    )
    # 2) with target and source padding
    tgt_pad, mem_pad = padding([5, 3], 5), padding([4, 7], 7)
    expected = layer(x, memory, tgt_mask=tgt_mask, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)
    got = block(x, memory, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)
    check_close(
        got,
        expected,
        what=f"{what} with tgt_key_padding_mask and memory_key_padding_mask",
        reference="torch.nn.TransformerDecoderLayer",
        mistakes={
            NO_MEM_PAD: lambda: _block_ref(layer, x, memory, norm_first=norm_first, self_pad=tgt_pad),
            "target padding mask not passed to self-attention (tgt_key_padding_mask)": (
                lambda: _block_ref(layer, x, memory, norm_first=norm_first, mem_pad=mem_pad)
            ),
        },
    )


@pytest.mark.points(2)
@torch.no_grad()
@covers("decoder self-attention's causal mask")
def test_decoder_block_is_causal(impl) -> None:
    """DecoderBlock is causal: later target positions never change earlier outputs"""
    block = randomize(impl.DecoderBlock(D, H, d_ff=FF, norm_first=False)).eval()
    x, memory = torch.randn(2, 6, D), torch.randn(2, 4, D)
    base = block(x, memory)
    for t in range(5):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn(2, 5 - t, D)  # new "future" tokens
        out = block(x2, memory)
        diff = float((out[:, : t + 1] - base[:, : t + 1]).abs().max())
        if diff > 1e-5:
            # Which attention sees the future? A cross-attention on the decoder's own states does too, and then
            # a different memory changes nothing: that probe tells the two apart.
            reads_memory = float((block(x, torch.randn_like(memory)) - base).abs().max()) > 1e-3
            fail(
                f"changing the target at positions > {t} changed the outputs at positions <= {t} by up to {diff:.4g}:"
                f" position {t} can see the future." + likely(NOT_CAUSAL if reads_memory else CROSS_ON_SELF)
            )


@torch.no_grad()
def test_cross_attention_reads_memory(impl) -> None:
    """cross-attention reads the encoder memory and ignores its padded positions"""
    block = randomize(impl.DecoderBlock(D, H, d_ff=FF, norm_first=True)).eval()
    x, memory = torch.randn(2, 4, D), torch.randn(2, 6, D)
    out = block(x, memory)
    changed = block(x, torch.randn(2, 6, D))
    diff = float((changed - out).abs().max())
    check(
        diff > 1e-3,
        f"a completely different memory changed the DecoderBlock's output by only {diff:.3g}: the block ignores the"
        " encoder (cross_attn(h, memory, memory): queries from the decoder, keys and values from memory)."
        + likely(CROSS_ON_SELF),
    )
    mem_pad = padding([4, 6], 6)
    out = block(x, memory, memory_key_padding_mask=mem_pad)
    memory2 = memory.clone()
    memory2[0, 4:] = 100 * torch.randn(2, D)  # garbage where row 0 is padded
    out2 = block(x, memory2, memory_key_padding_mask=mem_pad)
    diff = float((out2 - out).abs().max())
    check(
        diff < 1e-5,
        f"changing memory only at padded source positions changed the output by {diff:.4g}: padding is attended to."
        + likely(NO_MEM_PAD),
    )


# ---------------------------------------------------------------- Task 3: Encoder and Decoder stacks


def _stack_mistakes(
    run: Callable[[nn.Module], torch.Tensor], ref: nn.Module, norm_first: bool, d: int = D
) -> dict[str, Callable[[], torch.Tensor]]:
    """Named mistakes for a two-layer torch stack ``ref``; ``run(stack)`` computes a stack's output."""

    def without_norm() -> torch.Tensor:
        r = copy.deepcopy(ref)
        r.norm = None
        return run(r)

    def shared() -> torch.Tensor:
        r = copy.deepcopy(ref)
        r.layers[0].load_state_dict(r.layers[1].state_dict())  # both "layers" are the last one copied
        return run(r)

    mistakes: dict[str, Callable[[], torch.Tensor]] = {SHARED_LAYERS: shared}
    if norm_first:
        mistakes[NO_FINAL_NORM] = without_norm
    else:
        mistakes[EXTRA_FINAL_NORM] = lambda: F.layer_norm(run(ref), (d,))
    return mistakes


@pytest.mark.parametrize("norm_first", NORM_FIRST)
def test_encoder_stack_matches_torch(impl, norm_first: bool) -> None:
    """Encoder equals torch's TransformerEncoder (independent layers, final LayerNorm if pre-LN)"""
    ref = nn.TransformerEncoder(
        torch_layer("encoder", norm_first),
        num_layers=2,
        norm=nn.LayerNorm(D) if norm_first else None,
        enable_nested_tensor=False,
    )
    randomize(ref)
    enc = impl.Encoder(2, D, H, d_ff=FF, dropout=0.0, norm_first=norm_first).eval()
    what = f"Encoder(2, {D}, {H}, d_ff={FF}, norm_first={norm_first})"
    copy_stack(enc, ref, "encoder", 2, what)
    x, pad = torch.randn(2, 6, D), padding([6, 3], 6)

    def run(stack: nn.Module) -> torch.Tensor:
        return stack(x, src_key_padding_mask=pad)

    check_close(
        enc(x, src_key_padding_mask=pad),
        run(ref),
        what=f"{what} on x (2, 6, {D}) with padding",
        reference="torch.nn.TransformerEncoder",
        mistakes=_stack_mistakes(run, ref, norm_first),
    )


@pytest.mark.parametrize("norm_first", NORM_FIRST)
def test_decoder_stack_matches_torch(impl, norm_first: bool) -> None:
    """Decoder equals torch's TransformerDecoder (independent layers, final LayerNorm if pre-LN)"""
    ref = nn.TransformerDecoder(
        torch_layer("decoder", norm_first), num_layers=2, norm=nn.LayerNorm(D) if norm_first else None
    )
    randomize(ref)
    dec = impl.Decoder(2, D, H, d_ff=FF, dropout=0.0, norm_first=norm_first).eval()
    what = f"Decoder(2, {D}, {H}, d_ff={FF}, norm_first={norm_first})"
    copy_stack(dec, ref, "decoder", 2, what)
    x, memory = torch.randn(2, 5, D), torch.randn(2, 6, D)
    tgt_pad, mem_pad = padding([5, 4], 5), padding([6, 2], 6)

    def run(stack: nn.Module) -> torch.Tensor:
        return stack(x, memory, tgt_mask=causal_mask(5), tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)

    got = dec(x, memory, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)
    check_close(
        got,
        run(ref),
        what=f"{what} on x (2, 5, {D}), memory (2, 6, {D}) with padding",
        reference="torch.nn.TransformerDecoder with a causal tgt_mask",
        mistakes=_stack_mistakes(run, ref, norm_first),
    )


# ---------------------------------------------------------------- Task 4: Transformer


def sinusoidal(max_len: int, d: int) -> torch.Tensor:
    """The paper's table (§3.5) in float64: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(same)."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]
    angle = pos / 10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)  # (max_len, d/2)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(max_len, d)  # interleave: sin, cos, sin, ...


class Reference(nn.Module):
    """The encoder–decoder from torch parts: Embedding x sqrt(d) + PE -> TransformerEncoder/Decoder -> Linear."""

    def __init__(self, vocab: int, d: int, n_layers: int, norm_first: bool) -> None:
        super().__init__()
        self.d = d
        self.src_emb, self.tgt_emb = nn.Embedding(vocab, d), nn.Embedding(vocab, d)
        self.encoder = nn.TransformerEncoder(
            torch_layer("encoder", norm_first, d),
            n_layers,
            norm=nn.LayerNorm(d) if norm_first else None,
            enable_nested_tensor=False,
        )
        self.decoder = nn.TransformerDecoder(
            torch_layer("decoder", norm_first, d), n_layers, norm=nn.LayerNorm(d) if norm_first else None
        )
        self.head = nn.Linear(d, vocab)
        randomize(self)
        with torch.no_grad():
            self.src_emb.weight.mul_(0.3)  # embeddings x sqrt(d) ~ size 1, like the positions
            self.tgt_emb.weight.mul_(0.3)

    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        src_pad: torch.Tensor | None = None,
        tgt_pad: torch.Tensor | None = None,
        *,
        scale: bool = True,
        pos: str = "src+tgt",
        mem_pad: bool = True,
        same_embedding: bool = False,
    ) -> torch.Tensor:
        s = math.sqrt(self.d) if scale else 1.0
        pe = sinusoidal(64, self.d).float().to(src.device)
        tgt_emb = self.src_emb if same_embedding else self.tgt_emb
        x = self.src_emb(src) * s + (pe[: src.size(1)] if "src" in pos else 0)  # (B, S, d)
        memory = self.encoder(x, src_key_padding_mask=src_pad)  # (B, S, d)
        y = tgt_emb(tgt) * s + (pe[: tgt.size(1)] if "tgt" in pos else 0)  # (B, T, d)
        y = self.decoder(
            y,
            memory,
            tgt_mask=causal_mask(tgt.size(1), src.device),
            tgt_key_padding_mask=tgt_pad,
            memory_key_padding_mask=src_pad if mem_pad else None,
        )  # (B, T, d)
        return self.head(y)  # (B, T, V)


def make_pair(impl, norm_first: bool, *, vocab: int = 11, d: int = D, n_layers: int = 2) -> tuple[nn.Module, Reference]:
    """Your Transformer and a torch Reference holding the same weights."""
    cfg = impl.TransformerConfig(
        src_vocab_size=vocab,
        tgt_vocab_size=vocab,
        d_model=d,
        n_heads=H,
        n_encoder_layers=n_layers,
        n_decoder_layers=n_layers,
        d_ff=FF,
        dropout=0.0,
        norm_first=norm_first,
        max_len=64,
    )
    model = impl.Transformer(cfg).eval()
    ref = Reference(vocab, d, n_layers, norm_first)
    where = f"Transformer(norm_first={norm_first})"
    pairs = [("lm_head.weight", "head.weight", None), ("lm_head.bias", "head.bias", None)]
    for mine, theirs in (("src_embed", "src_emb"), ("tgt_embed", "tgt_emb")):
        table = (
            "weight" if isinstance(getattr(model, mine, None), nn.Embedding) else "embedding.weight"
        )  # a plain table too
        pairs.append((f"{mine}.{table}", f"{theirs}.weight", None))
    copy_weights(model, ref, pairs, where)
    copy_stack(_sub(model, "encoder", where), ref.encoder, "encoder", n_layers, where + ".encoder")
    copy_stack(_sub(model, "decoder", where), ref.decoder, "decoder", n_layers, where + ".decoder")
    return model, ref


def _sub(module: nn.Module, name: str, where: str) -> nn.Module:
    sub = getattr(module, name, None)
    if not isinstance(sub, nn.Module):
        fail(f"{where}: expected a submodule '{name}' (see the Transformer docstring)")
    return sub  # type: ignore[return-value]


@pytest.mark.points(2)
@pytest.mark.parametrize("norm_first", NORM_FIRST)
def test_transformer_matches_reference(impl, norm_first: bool) -> None:
    """Transformer logits equal a reference built from torch modules with the same weights"""
    model, ref = make_pair(impl, norm_first)
    src, tgt = torch.randint(0, 11, (2, 7)), torch.randint(0, 11, (2, 5))
    src_pad, tgt_pad = padding([7, 4], 7), padding([5, 3], 5)
    what = f"Transformer(norm_first={norm_first}) logits for src (2, 7), tgt (2, 5)"
    got = model(src, tgt)
    check_close(
        got,
        ref(src, tgt),
        what=what,
        reference="torch Embedding x sqrt(d) + sinusoidal PE, TransformerEncoder/Decoder, Linear",
        atol=1e-4,
        rtol=1e-4,
        mistakes={
            f"{NO_POS} (source and target)": lambda: ref(src, tgt, pos=""),
            f"{NO_POS} on the source side": lambda: ref(src, tgt, pos="tgt"),
            f"{NO_POS} on the target side": lambda: ref(src, tgt, pos="src"),
            "token embeddings not scaled by sqrt(d_model) (plain nn.Embedding instead of TokenEmbedding)": (
                lambda: ref(src, tgt, scale=False)
            ),
            "target ids embedded with the source embedding table (src_embed used for tgt)": (
                lambda: ref(src, tgt, same_embedding=True)
            ),
            "softmax applied in forward (return logits; softmax only for probabilities)": (
                lambda: ref(src, tgt).softmax(-1)
            ),
        },
    )
    got = model(src, tgt, src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad)
    check_close(
        got,
        ref(src, tgt, src_pad, tgt_pad),
        what=what + " with src and tgt padding masks",
        atol=1e-4,
        rtol=1e-4,
        reference="the same reference with src_key_padding_mask / tgt_key_padding_mask / memory_key_padding_mask",
        mistakes={
            NO_MEM_PAD: (
                lambda: ref(src, tgt, src_pad, tgt_pad, mem_pad=False)
            ),
        },
    )
    memory = model.encode(src, src_key_padding_mask=src_pad)
    check_close(
        model.decode(tgt, memory, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad),
        got,
        what="decode(tgt, encode(src)) against forward(src, tgt) (decode must return logits (B, T, V))",
        atol=1e-5,
    )


def test_transformer_on_every_device_and_precision(impl, setting) -> None:
    """the Transformer's logits match the reference on this device / precision"""
    model, ref = make_pair(impl, norm_first=True, n_layers=1)
    src, tgt = torch.randint(0, 11, (2, 6)), torch.randint(0, 11, (2, 5))
    src_pad, tgt_pad = padding([6, 4], 6), padding([5, 3], 5)
    with torch.no_grad():
        expected = ref(src, tgt, src_pad, tgt_pad)
    model = setting.module(model)
    with torch.no_grad(), setting.autocast():
        got = model(
            setting.tensor(src),
            setting.tensor(tgt),
            src_key_padding_mask=setting.tensor(src_pad),
            tgt_key_padding_mask=setting.tensor(tgt_pad),
        )
    setting.sync()
    check(got.device.type == setting.device, f"logits on {got.device}, expected {setting.device}")
    check_close(got.float().cpu(), expected, what=f"Transformer logits on {setting.id}", **setting.tol)


# ---------------------------------------------------------------- Task 5: greedy_decode

BOS, EOS, PAD = 1, 2, 0


def _tiny_model(impl, vocab: int = 8) -> nn.Module:
    cfg = impl.TransformerConfig(
        src_vocab_size=vocab,
        tgt_vocab_size=vocab,
        d_model=D,
        n_heads=H,
        n_encoder_layers=1,
        n_decoder_layers=1,
        d_ff=FF,
        dropout=0.0,
        norm_first=True,
        max_len=32,
    )
    return impl.Transformer(cfg).eval()


def _force(model: nn.Module, token: int) -> None:
    """Make the output layer predict ``token`` at every position, whatever the input."""
    head = _sub(model, "lm_head", "Transformer")
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[token] = 10.0


def test_transformer_init_and_shared_positions(impl) -> None:
    """Transformer: one SinusoidalPositionalEncoding `pos` with the config's dropout, every matrix Xavier-uniform"""
    cfg = impl.TransformerConfig(src_vocab_size=40, tgt_vocab_size=48, d_model=64, n_heads=4, n_encoder_layers=1,
                                 n_decoder_layers=1, d_ff=128, dropout=0.25, norm_first=True, max_len=16)
    torch.manual_seed(0)
    model = impl.Transformer(cfg)
    pos = getattr(model, "pos", None)
    check(pos is not None and type(pos).__name__ == "SinusoidalPositionalEncoding",
          f"Transformer.pos must be one SinusoidalPositionalEncoding shared by both sides, got {type(pos).__name__}")
    check(getattr(getattr(pos, "dropout", None), "p", None) == 0.25,
          f"Transformer.pos must use the config's dropout (0.25), got {getattr(getattr(pos, 'dropout', None), 'p', None)}")
    # Xavier-uniform (as torch.nn.Transformer): U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), so std = a / sqrt(3).
    # nn.Linear's own default has a = 1 / sqrt(fan_in) and nn.Embedding's is N(0, 1): both far from it here.
    bad = []
    for name, w in model.named_parameters():
        if w.dim() != 2 or w.numel() < 1024:
            continue
        fan_out, fan_in = w.shape
        a = math.sqrt(6.0 / (fan_in + fan_out))
        std = float(w.detach().std())
        if float(w.detach().abs().max()) > a * 1.0001 or not 0.8 * a / math.sqrt(3) < std < 1.2 * a / math.sqrt(3):
            bad.append(f"{name} {tuple(w.shape)}: max |w| {float(w.detach().abs().max()):.3g}, std {std:.3g};"
                       f" Xavier-uniform: max {a:.3g}, std {a / math.sqrt(3):.3g}")
    check(not bad, "these matrices are not Xavier-uniform initialised (nn.init.xavier_uniform_ on every parameter with"
          " dim() > 1, after building the model):\n  " + "\n  ".join(bad[:6]))


def test_greedy_stops_at_eos_and_length_limit(impl) -> None:
    """greedy_decode starts with BOS, stops at EOS, and never returns more than max_len tokens"""
    model = _tiny_model(impl)
    src = torch.randint(3, 8, (3, 5))
    _force(model, EOS)
    out = impl.greedy_decode(model, src, max_len=6, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    check_close(
        out,
        torch.tensor([[BOS, EOS]] * 3),
        what="greedy_decode with an output layer that always predicts EOS",
        mistakes={
            "greedy decoding does not stop at EOS": torch.tensor([[BOS] + [EOS] * 5] * 3),
            "BOS left out of the output": torch.tensor([[EOS]] * 3),
        },
    )
    _force(model, 5)
    out = impl.greedy_decode(model, src, max_len=6, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    check_close(
        out,
        torch.tensor([[BOS, 5, 5, 5, 5, 5]] * 3),
        what="greedy_decode(max_len=6) with an output layer that always predicts token 5 (never EOS)",
        mistakes={
            "max_len counted without BOS (the output holds at most max_len tokens, BOS included)": (
                torch.tensor([[BOS] + [5] * 6] * 3)
            )
        },
    )
    out = impl.greedy_decode(model, src, max_len=1, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    check_close(out, torch.tensor([[BOS]] * 3), what="greedy_decode(max_len=1): only room for BOS")
    check(out.dtype == torch.long, f"greedy_decode must return int64 token ids, got {out.dtype}")


class ScriptedDecoder(nn.Module):
    """A decoder stack that ignores its input: at position t of row b its output encodes token script[b][t].

    With lm_head set to read that code back, the model "predicts" script[b][t] after a prefix of
    t + 1 tokens, whichever positions greedy_decode passes on to lm_head.
    """

    def __init__(self, script: list[list[int]], d_model: int) -> None:
        super().__init__()
        self.script, self.d_model = torch.tensor(script), d_model
        self.lengths: list[int] = []  # the prefix length of every call: tells "only the last token fed" apart

    def forward(self, x: torch.Tensor, memory: torch.Tensor, **masks: object) -> torch.Tensor:
        B, T, _ = x.shape
        self.lengths.append(T)
        return F.one_hot(self.script[:B, :T], self.d_model).to(x.device, x.dtype)  # (B, T, d_model)


def _script(model: nn.Module, script: list[list[int]], vocab: int) -> None:
    model.decoder = ScriptedDecoder(script, D)
    head = _sub(model, "lm_head", "Transformer")
    with torch.no_grad():
        head.weight.copy_(10.0 * torch.eye(vocab, D))  # logit v = 10 * (code == v)
        head.bias.zero_()


@pytest.mark.points(2)
@covers("greedy_decode")
def test_greedy_pads_finished_sequences(impl) -> None:
    """greedy_decode pads each row after its own EOS and stops when every row is done"""
    model = _tiny_model(impl)
    script = [
        [5, 6, EOS, 3, 3, 3, 3, 3],  # finishes after 3 tokens
        [7, EOS, 4, 4, 4, 4, 4, 4],  # finishes after 2
        [4, 4, 4, 4, EOS, 6, 6, 6],  # finishes after 5
    ]
    _script(model, script, 8)
    src = torch.randint(3, 8, (3, 4))
    out = impl.greedy_decode(model, src, max_len=9, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    expected = torch.tensor([
        [BOS, 5, 6, EOS, PAD, PAD],
        [BOS, 7, EOS, PAD, PAD, PAD],
        [BOS, 4, 4, 4, 4, EOS],
    ])  # fmt: skip
    no_stop = torch.tensor([[BOS] + row for row in script])
    check_close(
        out,
        expected,
        what="greedy_decode with a scripted decoder (rows end with EOS after 3, 2 and 5 tokens)",
        mistakes={
            "greedy decoding does not stop at EOS (it runs to max_len)": no_stop,
            "finished sequences not padded after EOS (they keep generating)": no_stop[:, :6],
            "decoding goes on after every sequence has finished (stop when all have produced EOS)": (
                torch.cat([expected, torch.zeros(3, 3, dtype=torch.long)], dim=1)
            ),
            # Both give this output; the prefix lengths the decoder was called with tell which one it is.
            (FEED_LAST if len(model.decoder.lengths) > 1 and max(model.decoder.lengths) == 1 else FIRST_POS): (
                torch.tensor([[BOS] + [row[0]] * 8 for row in script])
            ),
        },
    )


# ---------------------------------------------------------------- learnability

REVERSE = {"steps": 100, "lr": 1e-2, "batch_size": 128, "seed": 0}  # 100% on 16 of 16 seeds, about 1 s of CPU


@pytest.mark.timeout(120)
@pytest.mark.points(3)
def test_learns_to_reverse(impl) -> None:
    """trained from scratch, a tiny Transformer reverses held-out sequences (>= 99% exact)"""
    model, test = impl.train_reverse(**REVERSE)
    src, want = test, test.flip(1)  # (N, L)
    N, L = src.shape
    with torch.no_grad():
        out = impl.greedy_decode(model, src, max_len=L + 2, bos_id=BOS, eos_id=EOS, pad_id=PAD)  # (N, <= L+2)
        # teacher forcing: what the model predicts when it is shown the right prefix
        tf = model(src, torch.cat([torch.full((N, 1), BOS), want], dim=1)).argmax(-1)  # (N, L+1)
    full = torch.cat([torch.full((N, 1), BOS), want, torch.full((N, 1), EOS)], dim=1)  # (N, L+2)
    got = torch.full_like(full, PAD)
    got[:, : min(out.size(1), L + 2)] = out[:, : L + 2]
    ok = (got == full).all(dim=1)
    acc = float(ok.float().mean())
    tf_acc = float((tf == full[:, 1:]).all(dim=1).float().mean())
    if acc >= 0.99:
        return
    bad = int((~ok).nonzero()[0, 0])
    hint = ""
    if tf_acc - acc > 0.3:
        hint = (
            f"\n  With the right prefix shown, it is right {tf_acc:.0%} of the time, yet decoding on its own fails:"
            " either it learned to copy the answer from the future, or greedy_decode does not feed its own"
            " predictions back in." + likely(NOT_CAUSAL, FEED_LAST)
        )
    else:
        hint = (
            f"\n  Even with the right prefix shown it is right only {tf_acc:.0%} of the time. Make the other checks"
            f" pass first; a model that cannot learn to reverse usually has the {NO_POS}"
            " (attention alone cannot see order)."
        )
    fail(
        f"after train_reverse({REVERSE['steps']} steps, seeded), greedy decoding reverses {acc:.1%} of {N} held-out"
        f" sequences; expected >= 99%.\n  e.g. source {src[bad].tolist()}: expected {full[bad].tolist()},"
        f" got {got[bad].tolist()}" + hint
    )
