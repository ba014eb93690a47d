"""Graded checks for stage 2.2 — a decoder-only GPT from your Part 1 parts.

Reference numerics:
  * the block and the model: ``torch.nn.TransformerEncoderLayer(norm_first=True, batch_first=True,
    dropout=0.0)`` with a causal ``src_mask`` and GPT-2's tanh GELU (``F.gelu(approximate="tanh")``;
    also exact GELU and ReLU), composed with ``torch.nn.Embedding`` (tokens and positions),
    ``torch.nn.LayerNorm`` (ln_f) and a head tied to the token table (``F.linear(h, wte)``); random
    weights copied into your modules by name;
  * the loss: ``torch.nn.functional.cross_entropy`` on your own logits;
  * the GPT-2 layout: a functional GPT-2 forward written here from the published model's math
    (Radford et al. 2019; Hugging Face ``modeling_gpt2``: ``x @ W + b`` for Conv1D, ``F.layer_norm``,
    ``F.scaled_dot_product_attention(is_causal=True)``) on a locally generated random state dict;
  * initialisation: the statistics GPT-2's recipe gives (normal(0, 0.02); residual projections
    0.02 / sqrt(2 n_layers); zero biases; LayerNorm ones / zeros);
  * named mistakes: the same torch submodules recomposed the mistaken way.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.testing import check, check_close, fail

V, BS, D, H, FF = 37, 16, 16, 4, 32  # vocab, block_size, d_model, heads, d_ff of the small test models
ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": torch.relu,
}

NOT_CAUSAL = "no causal mask: self-attention sees later positions (pass is_causal=True)"
POST_LN = "post-LN instead of pre-LN (SublayerConnection(norm_first=True) in a GPT block)"
NO_POS = "positions not added (pos_emb missing from forward)"
NO_LN_F = "final LayerNorm (ln_f) missing before lm_head"
SQRT_D = "token embedding scaled by sqrt(d_model), as 1.1's TokenEmbedding does (GPT-2 does not scale)"
NOT_TIED = "LM head not tied to the token embedding (lm_head.weight must be tok_emb.weight itself)"
TIED_BY_COPY = "LM head not tied to the token embedding but copied from it: equal values, a separate tensor"
NOT_TRANSPOSED = "Conv1D weights not transposed (GPT-2 stores (in, out); nn.Linear stores (out, in))"
RESIDUAL_NOT_SCALED = "residual-projection init not scaled by 1/sqrt(2·n_layers)"


def config(impl, **kw: object):  # noqa: ANN201 - the learner's GPTConfig
    base: dict[str, object] = dict(vocab_size=V, block_size=BS, d_model=D, n_layers=2, n_heads=H, d_ff=FF, dropout=0.0)
    base.update(kw)
    return impl.GPTConfig(**base)


def causal_mask(T: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, T) bool, True above the diagonal: position t may not attend to positions after t."""
    return torch.ones(T, T, dtype=torch.bool, device=device).triu(1)


# ---------------------------------------------------------------- the torch reference and weight copying


def randomize(module: nn.Module) -> nn.Module:
    """Random weights everywhere (LayerNorm gains near 1), so no two layers or norms are alike."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[-1]))
            elif "norm" in name and name.endswith("weight") or name.startswith("ln_f.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return module


def torch_layer(
    activation: str = "gelu_tanh", d: int = D, d_ff: int = FF, bias: bool = True
) -> nn.TransformerEncoderLayer:
    layer = nn.TransformerEncoderLayer(
        d, H, dim_feedforward=d_ff, dropout=0.0, activation=ACTS[activation], batch_first=True, norm_first=True,
        bias=bias,
    )  # fmt: skip
    return randomize(layer).train()  # train(): no inference fast path, plain math (dropout is 0)


def block_ref(
    layer: nn.TransformerEncoderLayer,
    x: torch.Tensor,
    *,
    causal: bool = True,
    norm_first: bool = True,
    act: str = "gelu_tanh",
) -> torch.Tensor:
    """torch's layer math written out, with switches that reproduce named mistakes."""
    am = causal_mask(x.size(1), x.device) if causal else None

    def sa(h: torch.Tensor) -> torch.Tensor:
        return layer.self_attn(h, h, h, attn_mask=am, need_weights=False)[0]

    def ff(h: torch.Tensor) -> torch.Tensor:
        return layer.linear2(ACTS[act](layer.linear1(h)))

    for f, norm in ((sa, layer.norm1), (ff, layer.norm2)):
        x = x + f(norm(x)) if norm_first else norm(x + f(x))
    return x


class Reference(nn.Module):
    """A GPT from torch parts: Embedding + position Embedding -> TransformerEncoderLayer(norm_first) x L -> LayerNorm -> tied head."""

    def __init__(self, n_layers: int = 2, activation: str = "gelu_tanh", d: int = D, vocab: int = V) -> None:
        super().__init__()
        self.d, self.activation = d, activation
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(BS, d)
        self.layers = nn.ModuleList([torch_layer(activation, d) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d)
        randomize(self)

    def forward(
        self,
        ids: torch.Tensor,
        *,
        causal: bool = True,
        pos: bool = True,
        final_norm: bool = True,
        scale: float = 1.0,
        norm_first: bool = True,
        head: torch.Tensor | None = None,
    ) -> torch.Tensor:
        T = ids.size(1)
        x = self.wte(ids) * scale + (self.wpe.weight[:T] if pos else 0)  # (B, T, d)
        for layer in self.layers:
            if causal and norm_first:
                x = layer(x, src_mask=causal_mask(T, ids.device), is_causal=True)  # torch's own layer
            else:
                x = block_ref(layer, x, causal=causal, norm_first=norm_first, act=self.activation)
        if final_norm:
            x = self.ln_f(x)
        return F.linear(x, self.wte.weight if head is None else head)  # (B, T, V): the tied head


def _get(module: nn.Module, dotted: str, where: str) -> torch.Tensor:
    obj: object = module
    for part in dotted.split("."):
        if part.isdigit() and isinstance(obj, nn.ModuleList):
            nxt = obj[int(part)] if int(part) < len(obj) else None
        else:
            nxt = getattr(obj, part, None)
        if nxt is None:
            fail(
                f"{where}: has no '{dotted}' (stopped at '{part}'). The checks copy torch's weights into your model by"
                " name, so keep the names the docstrings give (Block: attn, ff, attn_sub, ff_sub; GPT: tok_emb,"
                " pos_emb, drop, blocks, ln_f, lm_head)."
            )
        obj = nxt
    if not isinstance(obj, torch.Tensor):
        fail(f"{where}: '{dotted}' is a {type(obj).__name__}, expected a parameter tensor")
    return obj  # type: ignore[return-value]


def block_pairs(prefix: str, theirs: str, bias: bool = True) -> list[tuple[str, str, int | None]]:
    """(your parameter, torch's parameter, which third of in_proj) for one Block."""
    pairs: list[tuple[str, str, int | None]] = []
    names = ("weight", "bias") if bias else ("weight",)
    for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):  # in_proj_weight is [W_q; W_k; W_v] stacked
        pairs += [(f"{prefix}attn.{proj}.{n}", f"{theirs}self_attn.in_proj_{n}", i) for n in names]
    pairs += [(f"{prefix}attn.out_proj.{n}", f"{theirs}self_attn.out_proj.{n}", None) for n in names]
    for lin in ("linear1", "linear2"):
        pairs += [(f"{prefix}ff.{lin}.{n}", f"{theirs}{lin}.{n}", None) for n in names]
    for sub, norm in (("attn_sub", "norm1"), ("ff_sub", "norm2")):
        pairs += [(f"{prefix}{sub}.norm.{n}", f"{theirs}{norm}.{n}", None) for n in ("weight", "bias")]
    return pairs


def copy_weights(mine: nn.Module, theirs: nn.Module, pairs: list[tuple[str, str, int | None]], where: str) -> None:
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


def make_pair(impl, n_layers: int = 2, activation: str = "gelu_tanh") -> tuple[nn.Module, Reference]:
    """Your GPT and a torch Reference holding the same weights."""
    model = impl.GPT(config(impl, n_layers=n_layers, activation=activation)).eval()
    ref = Reference(n_layers, activation)
    pairs = [("tok_emb.weight", "wte.weight", None), ("pos_emb.embedding.weight", "wpe.weight", None)]
    for i in range(n_layers):
        pairs += block_pairs(f"blocks.{i}.", f"layers.{i}.")
    pairs += [("ln_f.weight", "ln_f.weight", None), ("ln_f.bias", "ln_f.bias", None)]
    copy_weights(model, ref, pairs, "GPT")
    return model, ref


def _head(model: nn.Module) -> torch.Tensor | None:
    head = getattr(model, "lm_head", None)
    return getattr(head, "weight", None)


# ---------------------------------------------------------------- Task 1: Block


@pytest.mark.points(2)
@pytest.mark.parametrize("activation", list(ACTS))
def test_block_matches_torch(impl, activation: str) -> None:
    """Block equals torch's TransformerEncoderLayer(norm_first=True) with a causal mask (same weights)"""
    layer = torch_layer(activation)
    block = impl.Block(config(impl, activation=activation)).eval()
    what = f"Block(GPTConfig(d_model={D}, n_heads={H}, d_ff={FF}, activation={activation!r}))"
    copy_weights(block, layer, block_pairs("", ""), what)
    x = torch.randn(2, 7, D)
    with torch.no_grad():
        expected = layer(x, src_mask=causal_mask(7), is_causal=True)
        got = block(x)
    others = {a: f"the {a!r} activation used where {activation!r} was asked for" for a in ACTS if a != activation}
    check_close(
        got,
        expected,
        what=f"{what} on x (2, 7, {D})",
        reference="torch.nn.TransformerEncoderLayer(norm_first=True, batch_first=True) with a causal src_mask",
        mistakes={
            NOT_CAUSAL: lambda: block_ref(layer, x, causal=False, act=activation),
            POST_LN: lambda: block_ref(layer, x, norm_first=False, act=activation),
            **{name: (lambda a=a: block_ref(layer, x, act=a)) for a, name in others.items()},
        },
    )


# ---------------------------------------------------------------- Tasks 2 and 4: GPT and its forward


@pytest.mark.points(3)
def test_logits_match_reference(impl) -> None:
    """GPT logits equal a torch reference (Embedding + positions, TransformerEncoderLayers, LayerNorm, tied head)"""
    model, ref = make_pair(impl)
    ids = torch.randint(0, V, (3, 11))
    with torch.no_grad():
        got, loss = model(ids)
        check(loss is None, f"GPT(ids) without targets must return (logits, None), got a loss {loss!r}")
        expected = ref(ids)
        head = _head(model)
        check_close(
            got,
            expected,
            what="GPT(ids) logits for ids (3, 11)",
            reference="torch Embedding + position Embedding, TransformerEncoderLayer(norm_first=True) x 2, LayerNorm,"
            " F.linear(h, wte)",
            atol=1e-4,
            rtol=1e-4,
            mistakes={
                NOT_CAUSAL: lambda: ref(ids, causal=False),
                NO_POS: lambda: ref(ids, pos=False),
                NO_LN_F: lambda: ref(ids, final_norm=False),
                SQRT_D: lambda: ref(ids, scale=math.sqrt(D)),
                POST_LN: lambda: ref(ids, norm_first=False),
                NOT_TIED: lambda: ref(ids, head=head),
                "softmax applied in forward (return logits; softmax only for probabilities)": (
                    lambda: expected.softmax(-1)
                ),
            },
        )


@pytest.mark.points(2)
def test_loss_is_cross_entropy(impl) -> None:
    """the loss is F.cross_entropy of the logits against the targets, ignoring targets of -100"""
    model, _ = make_pair(impl, n_layers=1)
    ids = torch.randint(0, V, (2, 9))
    targets = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        logits, loss = model(ids, targets)
    check(loss is not None, "GPT(ids, targets) returned loss None; with targets it must return the loss")
    check(
        isinstance(loss, torch.Tensor) and loss.dim() == 0,
        f"the loss must be a scalar tensor (the mean over positions), got {getattr(loss, 'shape', type(loss))}",
    )
    flat = logits.reshape(-1, V)
    check_close(
        loss,
        F.cross_entropy(flat, targets.reshape(-1)),
        what="GPT(ids, targets) loss",
        reference="torch.nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1))",
        mistakes={
            "targets shifted again inside forward (they already are the next tokens)": (
                lambda: F.cross_entropy(logits[:, :-1].reshape(-1, V), targets[:, 1:].reshape(-1))
            ),
            "summed instead of averaged over positions": (
                lambda: F.cross_entropy(flat, targets.reshape(-1), reduction="sum")
            ),
            "softmax applied before cross_entropy (it takes logits)": (
                lambda: F.cross_entropy(flat.softmax(-1), targets.reshape(-1))
            ),
        },
    )
    masked = targets.clone()
    masked[0, :4] = -100  # e.g. a prompt that is not trained on
    with torch.no_grad():
        _, loss2 = model(ids, masked)
    check_close(
        loss2,
        F.cross_entropy(flat, masked.reshape(-1)),
        what="GPT(ids, targets) loss with some targets -100 (ignored, as in stage 0.1)",
        reference="torch.nn.functional.cross_entropy (ignore_index=-100, its default)",
    )


@pytest.mark.points(2)
def test_is_causal(impl) -> None:
    """causality: changing the tokens after position t leaves the logits at positions <= t unchanged"""
    model = randomize(impl.GPT(config(impl))).eval()
    ids = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        base = model(ids)[0]
        for t in (0, 3, 8):
            ids2 = ids.clone()
            ids2[:, t + 1 :] = (ids[:, t + 1 :] + 1 + torch.randint(0, V - 1, ids2[:, t + 1 :].shape)) % V
            diff = float((model(ids2)[0][:, : t + 1] - base[:, : t + 1]).abs().max())
            if diff > 1e-5:
                fail(
                    f"changing the tokens at positions > {t} changed the logits at positions <= {t} by up to"
                    f" {diff:.4g}: position {t} can see the future.\n  Likely mistake: {NOT_CAUSAL}."
                )


def test_block_size_overflow_is_a_clear_error(impl) -> None:
    """a sequence longer than block_size raises ValueError naming block_size; T == block_size works"""
    model = impl.GPT(config(impl, n_layers=1)).eval()
    with torch.no_grad():
        logits, _ = model(torch.randint(0, V, (1, BS)))
    check(
        tuple(logits.shape) == (1, BS, V),
        f"GPT(ids (1, {BS})) with block_size={BS}: expected logits (1, {BS}, {V}), got {tuple(logits.shape)}",
    )
    try:
        with torch.no_grad():
            out = model(torch.randint(0, V, (1, BS + 1)))
    except NotImplementedError:
        raise
    except ValueError as exc:
        if "block_size" not in str(exc) and "block size" not in str(exc).lower():
            fail(
                f"GPT(ids (1, {BS + 1})) with block_size={BS} raised ValueError({str(exc)!r}), which does not mention"
                " block_size.\n  Likely mistake: no block_size check in GPT.forward (the error came from deeper"
                " inside, e.g. the position table); check T against config.block_size first and say so."
            )
        return
    except (IndexError, RuntimeError) as exc:
        fail(
            f"GPT(ids (1, {BS + 1})) with block_size={BS} raised {type(exc).__name__}: {str(exc)[:160]}; expected a"
            " ValueError naming block_size, raised in GPT.forward before any work"
        )
    fail(
        f"GPT(ids (1, {BS + 1})) with block_size={BS} returned {type(out).__name__}; expected ValueError naming block_size"
    )


# ---------------------------------------------------------------- Task 2: weight tying


@pytest.mark.points(2)
def test_head_is_tied_to_the_embedding(impl) -> None:
    """the LM head and the token embedding are one tensor (tie_weights=True), two with tie_weights=False"""
    model = impl.GPT(config(impl, n_layers=1))
    emb = _get(model, "tok_emb.weight", "GPT")
    head = _get(model, "lm_head.weight", "GPT")
    if head is not emb:
        if head.shape == emb.shape and torch.equal(head, emb) and head.data_ptr() != emb.data_ptr():
            fail(
                f"lm_head.weight equals tok_emb.weight but is a different tensor.\n  Likely mistake: {TIED_BY_COPY};"
                " the two drift apart at the first optimizer step. Assign the Parameter itself:"
                " self.lm_head.weight = self.tok_emb.weight"
            )
        fail(
            f"lm_head.weight ({tuple(head.shape)}) is not tok_emb.weight ({tuple(emb.shape)}), and their values differ."
            f"\n  Likely mistake: {NOT_TIED}: self.lm_head.weight = self.tok_emb.weight"
        )
    n_listed = sum(1 for p in model.parameters() if p is emb)
    check(n_listed == 1, f"the tied matrix appears {n_listed} times in model.parameters(); expected once")
    loss = model(torch.randint(0, V, (2, 5)), torch.randint(0, V, (2, 5)))[1]
    loss.backward()
    check(emb.grad is not None, "after loss.backward(), tok_emb.weight.grad is None: the tied matrix gets no gradient")
    untied = impl.GPT(config(impl, n_layers=1, tie_weights=False))
    u_emb, u_head = _get(untied, "tok_emb.weight", "GPT"), _get(untied, "lm_head.weight", "GPT(tie_weights=False)")
    check(
        u_head is not u_emb and u_head.data_ptr() != u_emb.data_ptr(),
        "with tie_weights=False, lm_head.weight must be its own matrix, but it is tok_emb.weight",
    )


# ---------------------------------------------------------------- Task 3: initialisation

INIT_CFG = dict(vocab_size=512, block_size=64, d_model=64, n_layers=3, n_heads=4, d_ff=None)


DEFAULT_INIT = (
    "PyTorch's default nn.Linear init kept (uniform, std 1/sqrt(3·fan_in)) and nn.Embedding's normal(0, 1):"
    " init_weights not applied to these modules"
)


def _std_tag(std: float, fan_in: int, n_layers: int, residual: bool, embedding: bool) -> str:
    """Which catalogued init gives ``std`` for this tensor ("" when none does)."""
    close = lambda a, b: abs(a - b) <= 0.1 * b  # noqa: E731
    if residual and close(std, 0.02):
        return RESIDUAL_NOT_SCALED + " (they have std 0.02 like the other weights)"
    if residual and close(std, 0.02 / math.sqrt(n_layers)):
        return "residual projections scaled by 1/sqrt(n_layers) instead of 1/sqrt(2·n_layers)"
    if (not embedding and close(std, 1 / math.sqrt(3 * fan_in))) or (embedding and close(std, 1.0)):
        return DEFAULT_INIT
    if not residual and close(std, 0.02 / math.sqrt(2 * n_layers)):
        return "every Linear scaled by 1/sqrt(2·n_layers); only attn.out_proj and ff.linear2 are"
    return ""


@pytest.mark.points(3)
def test_gpt2_initialisation(impl) -> None:
    """GPT-2 init: weights normal(0, 0.02), residual projections 0.02/sqrt(2·n_layers), zero biases, LayerNorm 1/0"""
    L = INIT_CFG["n_layers"]
    model = impl.GPT(impl.GPTConfig(**INIT_CFG))
    d = INIT_CFG["d_model"]
    res = 0.02 / math.sqrt(2 * L)
    # (name, tensor, accepted stds, fan_in, residual projection?, embedding table?)
    checks: list[tuple[str, torch.Tensor, tuple[float, ...], int, bool, bool]] = [
        ("tok_emb.weight", _get(model, "tok_emb.weight", "GPT"), (0.02,), d, False, True),
        ("pos_emb.embedding.weight", _get(model, "pos_emb.embedding.weight", "GPT"), (0.02, 0.01), d, False, True),
    ]
    for i in range(L):
        for name in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "ff.linear1"):
            w = _get(model, f"blocks.{i}.{name}.weight", "GPT")
            checks.append((f"blocks.{i}.{name}.weight", w, (0.02,), d, False, False))
        w = _get(model, f"blocks.{i}.attn.out_proj.weight", "GPT")
        checks.append((f"blocks.{i}.attn.out_proj.weight", w, (res,), d, True, False))
        w = _get(model, f"blocks.{i}.ff.linear2.weight", "GPT")
        checks.append((f"blocks.{i}.ff.linear2.weight", w, (res,), 4 * d, True, False))
    problems: list[str] = []
    tags: list[str] = []
    for name, w, wants, fan_in, residual, embedding in checks:
        w = w.detach().double()
        std, mean = float(w.std()), float(w.mean())
        if not any(abs(std - s) <= 0.1 * s for s in wants) or abs(mean) > 0.2 * min(wants):
            target = " or ".join(f"{s:.4g}" for s in wants)
            problems.append(f"{name} {tuple(w.shape)}: mean {mean:.3g}, std {std:.4g}; expected mean 0, std {target}")
            tags.append(_std_tag(std, fan_in, L, residual, embedding))
    for name, p in model.named_parameters():
        p = p.detach()
        is_norm = "norm" in name or name.startswith("ln_f")
        if name.endswith(".bias") and not is_norm and float(p.abs().max()) > 0:
            problems.append(f"{name}: expected all zeros, got max |b| = {float(p.abs().max()):.3g}")
            tags.append(DEFAULT_INIT if tags and tags[0] == DEFAULT_INIT else "Linear biases not zeroed")
        if is_norm and name.endswith("weight") and not torch.equal(p, torch.ones_like(p)):
            problems.append(f"{name}: a LayerNorm gain must start at 1")
            tags.append("")
        if is_norm and name.endswith("bias") and float(p.abs().max()) > 0:
            problems.append(f"{name}: a LayerNorm shift must start at 0")
            tags.append("")
    if problems:
        more = f"\n  ... and {len(problems) - 6} more" if len(problems) > 6 else ""
        named = f"\n  Likely mistake: {tags[0]}." if tags and tags[0] and len(set(tags)) == 1 else ""
        fail(
            f"GPT({', '.join(f'{k}={v}' for k, v in INIT_CFG.items())}) right after construction, "
            f"{len(problems)} tensors off GPT-2's initialisation (std within 10%):\n  "
            + "\n  ".join(problems[:6])
            + more
            + named
        )


# ---------------------------------------------------------------- Task 5: the parameter count


def formula(V_: int, bs: int, d: int, L: int, d_ff: int, *, bias: bool, tied: bool) -> tuple[int, int]:
    """The lesson's count: (all parameters, without the two embedding tables)."""
    per_block = 4 * d * d + 2 * d * d_ff + 4 * d + (4 * d + d_ff + d if bias else 0)  # attn, FFN, 2 LayerNorms
    non_emb = L * per_block + 2 * d + (0 if tied else V_ * d)  # + ln_f (+ an untied head)
    return non_emb + V_ * d + bs * d, non_emb


@pytest.mark.points(2)
def test_parameter_count(impl) -> None:
    """num_params() and num_params(non_embedding=True) match the lesson's formula (tied and untied, with and without bias)"""
    for kw in ({"tie_weights": True, "bias": True}, {"tie_weights": False, "bias": False}):
        cfg = config(impl, n_layers=3, **kw)
        model = impl.GPT(cfg)
        total, non_emb = formula(V, BS, D, 3, FF, bias=kw["bias"], tied=kw["tie_weights"])
        what = f"GPT(vocab {V}, block_size {BS}, d_model {D}, 3 layers, d_ff {FF}, tie_weights={kw['tie_weights']}, bias={kw['bias']})"
        actual = sum(p.numel() for p in model.parameters())
        if actual != total:
            diff = actual - total
            named = {
                V * D: f"{NOT_TIED}: the head is a second (V, d) matrix",
                V: "lm_head has a bias (GPT-2's has none)",
            }
            if not kw["bias"]:
                named[3 * 4 * D] = "bias=False not passed on to MultiHeadAttention (its four projections keep biases)"
                named[3 * (FF + D)] = "bias=False not passed on to FeedForward (linear1 and linear2 keep biases)"
            hint = f"\n  Likely mistake: {named[diff]}." if diff in named else ""
            fail(
                f"{what} holds {actual} parameters (sum over model.parameters()); the lesson's formula gives {total}"
                f" (difference {diff:+d}).{hint}"
            )
        got_total, got_non = model.num_params(), model.num_params(non_embedding=True)
        if got_total != total:
            named = {
                total + V * D: "the tied head counted twice (count each tensor once, e.g. over model.parameters())"
            }
            hint = f"\n  Likely mistake: {named[got_total]}." if got_total in named else ""
            fail(f"{what}.num_params() = {got_total}, expected {total}.{hint}")
        if got_non != non_emb:
            named = {
                total - BS * D: "only the position table subtracted (nanoGPT's convention); the lesson leaves out both"
                " embedding tables",
                total - V * D: "only the token table subtracted; the position table is an embedding too",
                total: "non_embedding ignored",
            }
            if not kw["tie_weights"]:
                named[non_emb - V * D] = "the untied lm_head subtracted too (it is not an embedding table)"
            hint = f"\n  Likely mistake: {named[got_non]}." if got_non in named else ""
            fail(
                f"{what}.num_params(non_embedding=True) = {got_non}, expected {non_emb} (all {total} minus the token"
                f" table {V}x{D} and the position table {BS}x{D}).{hint}"
            )


# ---------------------------------------------------------------- Task 6: GPT-2's layout


def gpt2_state_dict(d: int, L: int, d_ff: int, *, prefix: str = "", extras: bool = False) -> dict[str, torch.Tensor]:
    """A random state dict in the published GPT-2 layout (Conv1D weights are (in, out))."""
    g = torch.Generator().manual_seed(1234)

    def r(*shape: int, scale: float | None = None) -> torch.Tensor:
        s = (1 / math.sqrt(shape[0])) if scale is None else scale
        return torch.randn(*shape, generator=g) * s

    sd: dict[str, torch.Tensor] = {"wte.weight": r(V, d, scale=0.5), "wpe.weight": r(BS, d, scale=0.5)}
    for i in range(L):
        p = f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            sd[p + ln + ".weight"], sd[p + ln + ".bias"] = 1 + r(d, scale=0.2), r(d, scale=0.2)
        sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"] = r(d, 3 * d), r(3 * d, scale=0.2)
        sd[p + "attn.c_proj.weight"], sd[p + "attn.c_proj.bias"] = r(d, d), r(d, scale=0.2)
        sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"] = r(d, d_ff), r(d_ff, scale=0.2)
        sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"] = r(d_ff, d), r(d, scale=0.2)
        if extras:  # the causal-mask buffers older GPT-2 checkpoints carry
            sd[p + "attn.bias"] = torch.tril(torch.ones(BS, BS)).view(1, 1, BS, BS)
            sd[p + "attn.masked_bias"] = torch.tensor(-1e4)
    sd["ln_f.weight"], sd["ln_f.bias"] = 1 + r(d, scale=0.2), r(d, scale=0.2)
    out = {prefix + k: v for k, v in sd.items()}
    if extras:
        out["lm_head.weight"] = sd["wte.weight"]
    return out


def gpt2_forward(sd: dict[str, torch.Tensor], ids: torch.Tensor, n_heads: int, L: int) -> torch.Tensor:
    """GPT-2's forward pass on a state dict in its own layout (Conv1D: y = x @ W + b)."""
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    B, T = ids.shape
    d = sd["wte.weight"].shape[1]

    def ln(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (d,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-5)

    def conv1d(x: torch.Tensor, name: str) -> torch.Tensor:
        return x @ sd[name + ".weight"] + sd[name + ".bias"]

    x = sd["wte.weight"][ids] + sd["wpe.weight"][:T]  # (B, T, d)
    for i in range(L):
        p = f"h.{i}."
        q, k, v = conv1d(ln(x, p + "ln_1"), p + "attn.c_attn").split(d, dim=2)  # 3 x (B, T, d)
        q, k, v = (t.view(B, T, n_heads, d // n_heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)  # (B, T, d)
        x = x + conv1d(a, p + "attn.c_proj")
        x = x + conv1d(F.gelu(conv1d(ln(x, p + "ln_2"), p + "mlp.c_fc"), approximate="tanh"), p + "mlp.c_proj")
    return ln(x, "ln_f") @ sd["wte.weight"].T  # (B, T, V): the tied head


def untransposed(sd: dict[str, torch.Tensor], d: int, L: int) -> dict[str, torch.Tensor]:
    """What a model computes when every Conv1D weight is copied without its transpose (square shapes only)."""
    out = dict(sd)
    for i in range(L):
        p = f"h.{i}."
        out[p + "attn.c_attn.weight"] = torch.cat([w.T for w in sd[p + "attn.c_attn.weight"].split(d, dim=1)], dim=1)
        for name in ("attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            out[p + name + ".weight"] = sd[p + name + ".weight"].T
    return out


@pytest.mark.points(3)
def test_load_gpt2_state_dict(impl) -> None:
    """load_gpt2_state_dict maps GPT-2's names and Conv1D layout: the logits equal GPT-2's own forward pass"""
    L = 2
    ids = torch.randint(0, V, (2, 12))
    # 1) d_ff = d_model: every Conv1D weight is square, so a missing transpose shows in the values
    sd = gpt2_state_dict(D, L, D)
    model = impl.GPT(config(impl, n_layers=L, d_ff=D, activation="gelu_tanh")).eval()
    impl.load_gpt2_state_dict(model, sd)
    with torch.no_grad():
        got = model(ids)[0]
        check_close(
            got,
            gpt2_forward(sd, ids, H, L),
            what=f"logits after load_gpt2_state_dict (GPT-2 layout, d_model {D}, d_ff {D}, {L} layers)",
            reference="GPT-2's forward on its own state dict (Conv1D x @ W + b, F.layer_norm, causal SDPA, tied head)",
            atol=1e-4,
            rtol=1e-4,
            mistakes={NOT_TRANSPOSED: lambda: gpt2_forward(untransposed(sd, D, L), ids, H, L)},
        )
    # 2) GPT-2's own shapes (d_ff = 4 d_model), with the "transformer." prefix, mask buffers and lm_head.weight
    sd = gpt2_state_dict(D, L, 4 * D, prefix="transformer.", extras=True)
    model = impl.GPT(config(impl, n_layers=L, d_ff=4 * D, activation="gelu_tanh")).eval()
    tied_before = _head(model) is _get(model, "tok_emb.weight", "GPT")  # if not, the tying check says so
    impl.load_gpt2_state_dict(model, sd)
    with torch.no_grad():
        check_close(
            model(ids)[0],
            gpt2_forward(sd, ids, H, L),
            what="logits after load_gpt2_state_dict of a Hugging Face-style state dict ('transformer.' prefix, the"
            " attn.bias / attn.masked_bias buffers and lm_head.weight present; d_ff = 4 d_model)",
            reference="GPT-2's forward on its own state dict",
            atol=1e-4,
            rtol=1e-4,
        )
    check(
        not tied_before or _head(model) is _get(model, "tok_emb.weight", "GPT"),
        "after load_gpt2_state_dict the head is no longer tied: lm_head.weight must stay tok_emb.weight"
        " (copy values into the existing tensors with .copy_() under torch.no_grad())",
    )


# ---------------------------------------------------------------- devices and precision


def test_gpt_on_every_device_and_precision(impl, setting) -> None:
    """GPT logits and loss match the reference on this device / precision"""
    model, ref = make_pair(impl, n_layers=1)
    ids, targets = torch.randint(0, V, (2, 9)), torch.randint(0, V, (2, 9))
    with torch.no_grad():
        expected = ref(ids)
        expected_loss = F.cross_entropy(expected.reshape(-1, V), targets.reshape(-1))
    model = setting.module(model)
    with torch.no_grad(), setting.autocast():
        got, loss = model(setting.tensor(ids), setting.tensor(targets))
    setting.sync()
    check(got.device.type == setting.device, f"logits on {got.device}, expected {setting.device}")
    check_close(got.float().cpu(), expected, what=f"GPT logits on {setting.id}", **setting.tol)
    check_close(loss.float().cpu(), expected_loss, what=f"GPT loss on {setting.id}", **setting.tol)
