"""A learner's Stage 2.2 file (hand_written_block).

correct: the sublayers written out by hand, init with apply() (positions at 0.01, as OpenAI's code), the loss on (B, V, T) logits in float64, parameters counted by identity, GPT-2 weights loaded through one load_state_dict call
"""

from __future__ import annotations

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
        a, _ = self.attn(self.attn_sub.norm(x), is_causal=True)
        x = x + self.attn_sub.dropout(a)
        return x + self.ff_sub.dropout(self.ff(self.ff_sub.norm(x)))


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

        def f(mod):
            if isinstance(mod, nn.Linear):
                mod.weight.normal_(0, 0.02)
                if mod.bias is not None:
                    mod.bias.zero_()
            elif isinstance(mod, nn.Embedding):
                mod.weight.normal_(0, 0.01 if mod is self.pos_emb.embedding else 0.02)
            elif isinstance(mod, LayerNorm):
                mod.weight.fill_(1.0)
                mod.bias.fill_(0.0)

        self.apply(f)
        for name, p in self.named_parameters():
            if name.endswith("out_proj.weight") or name.endswith("linear2.weight"):
                p.normal_(0, 0.02 / (2 * self.config.n_layers) ** 0.5)

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
        loss = F.cross_entropy(
            logits.double().transpose(1, 2), targets
        ).float()  # (B*T, V) against (B*T,): the mean over the predicted positions
        return logits, loss

    # ------------------------------------------------------------------ Task 5: the parameter count

    def num_params(self, non_embedding: bool = False) -> int:
        """The number of parameters, each tensor counted once (a tied head is not counted twice).

        non_embedding=True leaves out the two embedding tables, tok_emb (V x d) and the position
        table (block_size x d), as in Kaplan et al. (2020): what remains is what does the computing.
        An untied lm_head is its own matrix and stays in both counts.
        """
        seen = {id(p): p.numel() for _, p in self.named_parameters()}
        skip = {id(self.tok_emb.weight), id(self.pos_emb.embedding.weight)} if non_embedding else set()
        return sum(n for k, n in seen.items() if k not in skip)


# ----------------------------------------------------------------------------- Task 6: GPT-2's weights


def load_gpt2_state_dict(model: GPT, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Rename GPT-2's tensors to mine, transpose the Conv1D weights, and load them all at once."""
    sd = {k[len("transformer.") :] if k.startswith("transformer.") else k: v for k, v in state_dict.items()}
    d = model.config.d_model
    mine: dict[str, torch.Tensor] = {
        "tok_emb.weight": sd["wte.weight"],
        "pos_emb.embedding.weight": sd["wpe.weight"],
        "ln_f.weight": sd["ln_f.weight"],
        "ln_f.bias": sd["ln_f.bias"],
        "lm_head.weight": sd["wte.weight"],
    }
    for i in range(len(model.blocks)):
        g, b = f"h.{i}.", f"blocks.{i}."
        mine[b + "attn_sub.norm.weight"], mine[b + "attn_sub.norm.bias"] = sd[g + "ln_1.weight"], sd[g + "ln_1.bias"]
        mine[b + "ff_sub.norm.weight"], mine[b + "ff_sub.norm.bias"] = sd[g + "ln_2.weight"], sd[g + "ln_2.bias"]
        qkv_w = sd[g + "attn.c_attn.weight"].t()  # (3d, d)
        qkv_b = sd[g + "attn.c_attn.bias"]  # (3d,)
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            mine[b + f"attn.{name}.weight"] = qkv_w[j * d : (j + 1) * d]
            mine[b + f"attn.{name}.bias"] = qkv_b[j * d : (j + 1) * d]
        for theirs, ours in (
            ("attn.c_proj", "attn.out_proj"),
            ("mlp.c_fc", "ff.linear1"),
            ("mlp.c_proj", "ff.linear2"),
        ):
            mine[b + ours + ".weight"] = sd[g + theirs + ".weight"].t()
            mine[b + ours + ".bias"] = sd[g + theirs + ".bias"]
    model.load_state_dict(mine)  # copies into the existing tensors: the tied head stays tied
