"""Stage 2.2 — a decoder-only GPT built from your Part 1 parts; GPT-2 initialisation and weight layout.

Your tasks (the lesson, README.md, walks through each one):
  Task 1  Block                  pre-LN causal self-attention + pre-LN feed-forward, from 1.4 / 1.5a / 1.5b
  Task 2  GPT.__init__           token table, 1.1's learned positions, N blocks, ln_f, a head tied to the tokens
  Task 3  GPT.init_weights       GPT-2's initialisation: normal(0, 0.02), residual projections / sqrt(2 n_layers)
  Task 4  GPT.forward            ids (B, T) -> (logits (B, T, V), cross-entropy loss or None)
  Task 5  GPT.num_params         the parameter count, with and without the embedding tables
  Task 6  load_gpt2_state_dict   GPT-2's published names and Conv1D layout -> your model

Everything you need from earlier stages is imported for you below (with `--deps mine` they are your own).
GPTConfig, ACTIVATIONS and IGNORE_INDEX are given.

Grade your work with:  nox -s grade -- 2.2
"""

from __future__ import annotations

import math  # noqa: F401  (you will want math.sqrt)
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: F401  (you will want F.cross_entropy)
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
        # TODO(Task 1): an unknown config.activation raises ValueError. Then make, with exactly these names:
        #   self.attn     = MultiHeadAttention(d_model, n_heads, dropout=..., bias=..., use_sdpa=...)
        #   self.ff       = FeedForward(d_model, d_ff, dropout=..., bias=..., **ACTIVATIONS[config.activation])
        #   self.attn_sub = SublayerConnection(d_model, dropout=..., norm_first=True)   and the same for self.ff_sub
        raise NotImplementedError("Task 1: Block.__init__")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model)."""
        # TODO(Task 1): the attention sublayer (causal: is_causal=True; MultiHeadAttention returns (out, weights)),
        #   then the feed-forward sublayer, each through its SublayerConnection.
        raise NotImplementedError("Task 1: Block.forward")


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
        # TODO(Task 2): make the submodules of the docstring, with exactly those names (a plain nn.Embedding for
        #   the tokens: no sqrt(d_model) scaling), tie the head when config.tie_weights (the same Parameter,
        #   not a copy of it), and finish with self.init_weights() (Task 3).
        raise NotImplementedError("Task 2: GPT.__init__")

    # ------------------------------------------------------------------ Task 3: GPT-2 initialisation

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2's initialisation (Radford et al. 2019 §2.3, as in nanoGPT and Hugging Face's GPT2Model).

        every nn.Linear and nn.Embedding weight ~ normal(0, 0.02) (tok_emb and the position table too);
        every nn.Linear bias = 0; every LayerNorm weight = 1, bias = 0; then the two projections that
        write into the residual stream in each block (attn.out_proj.weight, ff.linear2.weight)
        ~ normal(0, 0.02 / sqrt(2 * n_layers)): 2 * n_layers branches add up on the residual path.
        """
        # TODO(Task 3): walk self.modules() (nn.init.normal_, nn.init.zeros_, nn.init.ones_), then re-draw the two
        #   residual projections of every block with the smaller std.
        raise NotImplementedError("Task 3: GPT.init_weights")

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
        # TODO(Task 4): a ValueError naming block_size when T is too long; then tok_emb -> pos_emb -> drop ->
        #   blocks -> ln_f -> lm_head. With targets: F.cross_entropy over the (B*T, V) logits (reshape them; write
        #   a shape comment), ignore_index=IGNORE_INDEX.
        raise NotImplementedError("Task 4: GPT.forward")

    # ------------------------------------------------------------------ Task 5: the parameter count

    def num_params(self, non_embedding: bool = False) -> int:
        """The number of parameters, each tensor counted once (a tied head is not counted twice).

        non_embedding=True leaves out the two embedding tables, tok_emb (V x d) and the position
        table (block_size x d), as in Kaplan et al. (2020): what remains is what does the computing.
        An untied lm_head is its own matrix and stays in both counts.
        """
        # TODO(Task 5): count over self.parameters() (it lists a shared tensor once).
        raise NotImplementedError("Task 5: GPT.num_params")


# ----------------------------------------------------------------------------- Task 6: GPT-2's weights


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
    # TODO(Task 6): strip the prefix; for each name copy the tensor into your model's parameter under
    #   torch.no_grad() with .copy_() (so a tied head stays tied); split c_attn into its three (d, d) parts and
    #   transpose every Conv1D weight (.t()). Check shapes and say which name is missing or misfits.
    raise NotImplementedError("Task 6: load_gpt2_state_dict")
