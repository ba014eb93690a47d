"""A learner's Stage 2.2 file (nanogpt_count).

mistake: num_params(non_embedding=True) written after nanoGPT's get_num_params: only the position table subtracted
expect: only the position table subtracted
check: parameter
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shared.loader import load_dep

_pos = load_dep("1.1")
_mha = load_dep("1.4")
_ff = load_dep("1.5a")
_ln = load_dep("1.5b")

LearnedPositionalEmbedding = _pos.LearnedPositionalEmbedding
MultiHeadAttention = _mha.MultiHeadAttention
FeedForward = _ff.FeedForward
LayerNorm = _ln.LayerNorm
SublayerConnection = _ln.SublayerConnection

__all__ = ["ACTIVATIONS", "IGNORE_INDEX", "GPTConfig", "Block", "GPT", "load_gpt2_state_dict"]

#: GPTConfig.activation -> the FeedForward keyword arguments that select it (stage 1.5a).
ACTIVATIONS: dict[str, dict[str, str]] = {
    "gelu": {"approximate": "none"},  # GELU(x) = x·Φ(x), with erf
    "gelu_tanh": {"approximate": "tanh"},  # GPT-2's tanh approximation
    "relu": {"activation": "relu"},  # "Attention Is All You Need" §3.3
}
#: A target equal to this counts for nothing in the loss (torch's and stage 0.1's convention).
IGNORE_INDEX: int = -100


@dataclass
class GPTConfig:
    vocab_size: int = 1024  # token ids are 0 .. vocab_size-1; also the number of logits per position
    block_size: int = 128  # the longest sequence the model reads: rows of the position table
    d_model: int = 128  # width of every token vector (GPT-2 small: 768)
    n_layers: int = 4  # Blocks in the stack (GPT-2 small: 12)
    n_heads: int = 4  # attention heads per Block; d_model must be divisible by n_heads (GPT-2 small: 12)
    d_ff: int | None = None  # hidden width of each feed-forward network; None: 4 * d_model
    dropout: float = 0.0  # after embeddings + positions, on attention weights, FFN hidden, each residual branch
    bias: bool = True  # biases in every nn.Linear but lm_head (the LayerNorms always keep theirs)
    tie_weights: bool = True  # lm_head.weight IS tok_emb.weight (one tensor), as in GPT-2
    activation: str = "gelu_tanh"  # the FFN's nonlinearity: "gelu_tanh" (GPT-2), "gelu" (exact) or "relu"
    use_sdpa: bool = False  # attention through F.scaled_dot_product_attention (stage 1.4's fused path)


# ----------------------------------------------------------------------------- Task 1: the block


class Block(nn.Module):
    """One GPT-2 block: pre-LN causal self-attention, then a pre-LN feed-forward network.

        x = x + attn(ln_1(x))   (causal: position t sees positions 0..t)
        x = x + ff(ln_2(x))

    Submodules (fixed names; the checks and load_gpt2_state_dict use them; GPT-2's names in brackets):
        attn     MultiHeadAttention(d_model, n_heads, dropout, bias, use_sdpa)   [attn.c_attn, attn.c_proj]
        ff       FeedForward(d_model, d_ff, dropout, activation, bias)          [mlp.c_fc, mlp.c_proj]
        attn_sub SublayerConnection(d_model, dropout, norm_first=True)          [ln_1 is attn_sub.norm]
        ff_sub   SublayerConnection(d_model, dropout, norm_first=True)          [ln_2 is ff_sub.norm]
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        c = config
        if c.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {c.activation!r}")
        self.attn = MultiHeadAttention(c.d_model, c.n_heads, dropout=c.dropout, bias=c.bias, use_sdpa=c.use_sdpa)
        self.ff = FeedForward(c.d_model, c.d_ff, dropout=c.dropout, bias=c.bias, **ACTIVATIONS[c.activation])
        self.attn_sub = SublayerConnection(c.d_model, dropout=c.dropout, norm_first=True)
        self.ff_sub = SublayerConnection(c.d_model, dropout=c.dropout, norm_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model)."""
        x = self.attn_sub(x, lambda h: self.attn(h, is_causal=True)[0])  # (B, T, d)
        return self.ff_sub(x, self.ff)  # (B, T, d)


# ----------------------------------------------------------------------------- Tasks 2-5: the model


class GPT(nn.Module):
    """A decoder-only Transformer language model (GPT-2's architecture).

    ids (B, T) -> tok_emb (no sqrt(d_model) scaling) + pos_emb -> drop -> blocks -> ln_f -> lm_head -> logits (B, T, V)

    Submodules (fixed names):
        tok_emb  nn.Embedding(vocab_size, d_model)                   [GPT-2: wte]
        pos_emb  LearnedPositionalEmbedding(d_model, block_size)     [wpe is pos_emb.embedding]
        drop     nn.Dropout(dropout)
        blocks   nn.ModuleList of n_layers Blocks                    [h.0, h.1, ...]
        ln_f     LayerNorm(d_model)                                  [ln_f]
        lm_head  nn.Linear(d_model, vocab_size, bias=False); with tie_weights its weight IS tok_emb.weight
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)  # weight: (V, d)
        self.pos_emb = LearnedPositionalEmbedding(c.d_model, c.block_size)  # embedding.weight: (block_size, d)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList([Block(c) for _ in range(c.n_layers)])
        self.ln_f = LayerNorm(c.d_model)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)  # weight: (V, d)
        if c.tie_weights:
            self.lm_head.weight = self.tok_emb.weight  # one Parameter in two places, not a copy
        self.init_weights()

    # ------------------------------------------------------------------ Task 3: GPT-2 initialisation

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2's initialisation (Radford et al. 2019 §2.3, as in nanoGPT and Hugging Face's GPT2Model).

        every nn.Linear and nn.Embedding weight ~ normal(0, 0.02) (tok_emb and the position table too);
        every nn.Linear bias = 0; every LayerNorm weight = 1, bias = 0; then the two projections that
        write into the residual stream in each block (attn.out_proj.weight, ff.linear2.weight)
        ~ normal(0, 0.02 / sqrt(2 * n_layers)): 2 * n_layers branches add up on the residual path.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for block in self.blocks:
            nn.init.normal_(block.attn.out_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.ff.linear2.weight, mean=0.0, std=residual_std)

    # ------------------------------------------------------------------ Task 4: forward

    def forward(
        self, ids: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ids: (B, T) int64 token ids, T <= block_size -> (logits (B, T, V), loss or None).

        logits[:, t] scores the token that comes *after* ids[:, t]. targets: (B, T) int64, the
        token to predict at each position (already shifted: targets[:, t] = ids[:, t+1] for plain
        text), IGNORE_INDEX (-100) where nothing is to be predicted. loss: the mean cross-entropy
        over the predicted positions, a scalar; None when targets is None.
        Raises ValueError when T > block_size.
        """
        B, T = ids.shape
        if T > self.config.block_size:
            raise ValueError(
                f"sequence length {T} exceeds block_size={self.config.block_size}: the model has no position"
                f" beyond {self.config.block_size - 1}; crop the input to its last {self.config.block_size} tokens"
            )
        x = self.tok_emb(ids)  # (B, T, d)  no sqrt(d_model): GPT-2 does not scale its embeddings
        x = self.drop(self.pos_emb(x))  # (B, T, d)  + positions 0..T-1
        for block in self.blocks:
            x = block(x)  # (B, T, d)
        x = self.ln_f(x)  # (B, T, d)  the pre-LN residual stream, normalised once at the end
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        V = logits.size(-1)
        loss = F.cross_entropy(
            logits.reshape(B * T, V).float(), targets.reshape(B * T), ignore_index=IGNORE_INDEX
        )  # (B*T, V) against (B*T,): the mean over the predicted positions
        return logits, loss

    # ------------------------------------------------------------------ Task 5: the parameter count

    def num_params(self, non_embedding: bool = False) -> int:
        """The number of parameters, each tensor counted once (a tied head is not counted twice).

        non_embedding=True leaves out the two embedding tables, tok_emb (V x d) and the position
        table (block_size x d), as in Kaplan et al. (2020): what remains is what does the computing.
        An untied lm_head is its own matrix and stays in both counts.
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a shared tensor once
        if non_embedding:
            n -= self.pos_emb.embedding.weight.numel()  # the token table is the head's weight: keep it
        return n


# ----------------------------------------------------------------------------- Task 6: GPT-2's weights


def _conv1d(w: torch.Tensor) -> torch.Tensor:
    """GPT-2's Conv1D stores (in_features, out_features); nn.Linear stores (out, in): transpose."""
    return w.t()


def load_gpt2_state_dict(model: GPT, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy a state dict in the published GPT-2 layout (OpenAI's names, Hugging Face's GPT2Model) into ``model``.

    Names (an optional "transformer." prefix is stripped; the attention-mask buffers "h.{i}.attn.bias" /
    "h.{i}.attn.masked_bias" of older checkpoints are ignored; "lm_head.weight", (V, d), is used only by an
    untied head, which gets wte when it is absent, as GPT-2 ties its head):
        wte.weight (V, d), wpe.weight (block_size, d)
        h.{i}.ln_1.weight / .bias (d,)
        h.{i}.attn.c_attn.weight (d, 3d) / .bias (3d,)     queries, keys, values side by side
        h.{i}.attn.c_proj.weight (d, d) / .bias (d,)
        h.{i}.ln_2.weight / .bias (d,)
        h.{i}.mlp.c_fc.weight (d, d_ff) / .bias (d_ff,)
        h.{i}.mlp.c_proj.weight (d_ff, d) / .bias (d,)
        ln_f.weight / .bias (d,)
    Every ".weight" of c_attn, c_proj and c_fc is a Conv1D weight (in, out): it is transposed.

    Raises:
        KeyError: a tensor the model needs is missing (the message names it).
        ValueError: a tensor's shape does not fit the model's config, or names are left over.
    """
    sd = {k.removeprefix("transformer."): v for k, v in state_dict.items()}
    used: set[str] = set()
    d = model.config.d_model

    def take(name: str) -> torch.Tensor:
        if name not in sd:
            raise KeyError(f"GPT-2 state dict has no {name!r} (the model has {len(model.blocks)} blocks)")
        used.add(name)
        return sd[name]

    def put(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
        if tuple(dst.shape) != tuple(src.shape):
            raise ValueError(
                f"{name}: the model expects shape {tuple(dst.shape)}, the state dict gives {tuple(src.shape)}"
            )
        dst.copy_(src)

    with torch.no_grad():
        put(model.tok_emb.weight, take("wte.weight"), "wte.weight")
        put(model.pos_emb.embedding.weight, take("wpe.weight"), "wpe.weight")
        for i, block in enumerate(model.blocks):
            p = f"h.{i}."
            for norm, ln in ((block.attn_sub.norm, "ln_1"), (block.ff_sub.norm, "ln_2")):
                put(norm.weight, take(p + ln + ".weight"), p + ln + ".weight")
                put(norm.bias, take(p + ln + ".bias"), p + ln + ".bias")
            w = take(p + "attn.c_attn.weight")  # (d, 3d): [W_q | W_k | W_v] in Conv1D's (in, out) layout
            if tuple(w.shape) != (d, 3 * d):
                raise ValueError(f"{p}attn.c_attn.weight: expected shape {(d, 3 * d)}, got {tuple(w.shape)}")
            attn = block.attn
            for proj, w_part in zip((attn.q_proj, attn.k_proj, attn.v_proj), w.split(d, dim=1), strict=True):
                put(proj.weight, _conv1d(w_part), p + "attn.c_attn.weight")  # (d, d) each
            if attn.q_proj.bias is not None:
                b = take(p + "attn.c_attn.bias")  # (3d,)
                for proj, b_part in zip((attn.q_proj, attn.k_proj, attn.v_proj), b.split(d), strict=True):
                    put(proj.bias, b_part, p + "attn.c_attn.bias")
            linears = ((attn.out_proj, "attn.c_proj"), (block.ff.linear1, "mlp.c_fc"), (block.ff.linear2, "mlp.c_proj"))
            for linear, name in linears:
                put(linear.weight, _conv1d(take(p + name + ".weight")), p + name + ".weight")
                if linear.bias is not None:
                    put(linear.bias, take(p + name + ".bias"), p + name + ".bias")
        put(model.ln_f.weight, take("ln_f.weight"), "ln_f.weight")
        put(model.ln_f.bias, take("ln_f.bias"), "ln_f.bias")
        if model.lm_head.weight is not model.tok_emb.weight:  # an untied head has its own (V, d) matrix:
            head = sd.get("lm_head.weight", sd["wte.weight"])  # GPT-2's head is wte itself
            put(model.lm_head.weight, head, "lm_head.weight")
        used.add("lm_head.weight")
    left = sorted(k for k in sd if k not in used and not k.endswith((".attn.bias", ".attn.masked_bias")))
    if left:
        raise ValueError(f"GPT-2 state dict has {len(left)} tensors the model has no place for, e.g. {left[:3]}")
