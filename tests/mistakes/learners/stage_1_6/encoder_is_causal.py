"""A learner's Stage 1.6 file (encoder_is_causal).

mistake: the encoder's self-attention given is_causal=True
expect: encoder self-attention masked causally
check: not learns
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shared.loader import load_dep

_pos = load_dep("1.1")
_mha = load_dep("1.4")
_ff = load_dep("1.5a")
_ln = load_dep("1.5b")

TokenEmbedding = _pos.TokenEmbedding
SinusoidalPositionalEncoding = _pos.SinusoidalPositionalEncoding
MultiHeadAttention = _mha.MultiHeadAttention
FeedForward = _ff.FeedForward
LayerNorm = _ln.LayerNorm
SublayerConnection = _ln.SublayerConnection

__all__ = [
    "TransformerConfig",
    "EncoderBlock",
    "DecoderBlock",
    "Encoder",
    "Decoder",
    "Transformer",
    "greedy_decode",
    "PAD",
    "BOS",
    "EOS",
    "reverse_task_data",
    "train_reverse",
    "exact_match",
]


@dataclass
class TransformerConfig:
    src_vocab_size: int  # source token ids are 0 .. src_vocab_size-1
    tgt_vocab_size: int  # target token ids are 0 .. tgt_vocab_size-1; also the number of logits
    d_model: int = 512  # width of every token vector in the model
    n_heads: int = 8  # attention heads per attention layer; d_model must be divisible by n_heads
    n_encoder_layers: int = 6  # EncoderBlocks in the encoder stack
    n_decoder_layers: int = 6  # DecoderBlocks in the decoder stack
    d_ff: int = 2048  # hidden width of each feed-forward network
    dropout: float = 0.1  # on embeddings+positions, attention weights, FFN hidden, each residual branch
    norm_first: bool = False  # False: post-LN, as in the paper; True: pre-LN (GPT-2 and most models since)
    eps: float = 1e-5  # LayerNorm's epsilon
    max_len: int = 512  # longest source or target sequence the positional table covers


# ----------------------------------------------------------------------------- Task 1: the encoder block


class EncoderBlock(nn.Module):
    """Self-attention, then a feed-forward network; each wrapped in a residual connection and a LayerNorm.

    post-LN (norm_first=False, the paper):  x = norm(x + sublayer(x))
    pre-LN  (norm_first=True):              x = x + sublayer(norm(x))

    Submodules (the tests copy weights by these names; torch.nn.TransformerEncoderLayer's names in brackets):
        self_attn     MultiHeadAttention(d_model, n_heads, dropout)   [self_attn]
        feed_forward  FeedForward(d_model, d_ff, dropout)             [linear1, linear2]
        sublayer1     SublayerConnection around self-attention        [norm1, dropout1]
        sublayer2     SublayerConnection around the feed-forward      [norm2, dropout2]
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        norm_first: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout=dropout)
        self.sublayer1 = SublayerConnection(d_model, dropout=dropout, norm_first=norm_first, eps=eps)
        self.sublayer2 = SublayerConnection(d_model, dropout=dropout, norm_first=norm_first, eps=eps)

    def forward(self, x: torch.Tensor, *, src_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, S, d_model) -> (B, S, d_model).

        src_key_padding_mask: (B, S) bool, True where x holds padding (no position may attend to it), or None.
        """
        x = self.sublayer1(x, lambda h: self.self_attn(h, key_padding_mask=src_key_padding_mask, is_causal=True)[0])  # (B, S, d)
        return self.sublayer2(x, self.feed_forward)  # (B, S, d)


# ----------------------------------------------------------------------------- Task 2: the decoder block


class DecoderBlock(nn.Module):
    """Masked self-attention, cross-attention over the encoder output, then a feed-forward network.

    Each of the three is wrapped in a residual connection and a LayerNorm, as in EncoderBlock.
    The self-attention is always causal: position t sees target positions 0..t only.
    The cross-attention takes its queries from the decoder and its keys and values from ``memory``.

    Submodules (torch.nn.TransformerDecoderLayer's names in brackets):
        self_attn     MultiHeadAttention, causal self-attention       [self_attn]
        cross_attn    MultiHeadAttention, queries x, keys/values memory [multihead_attn]
        feed_forward  FeedForward(d_model, d_ff, dropout)             [linear1, linear2]
        sublayer1     SublayerConnection around self-attention        [norm1, dropout1]
        sublayer2     SublayerConnection around cross-attention       [norm2, dropout2]
        sublayer3     SublayerConnection around the feed-forward      [norm3, dropout3]
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        norm_first: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout=dropout)
        self.sublayer1 = SublayerConnection(d_model, dropout=dropout, norm_first=norm_first, eps=eps)
        self.sublayer2 = SublayerConnection(d_model, dropout=dropout, norm_first=norm_first, eps=eps)
        self.sublayer3 = SublayerConnection(d_model, dropout=dropout, norm_first=norm_first, eps=eps)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        *,
        tgt_key_padding_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, T, d_model) target states, memory: (B, S, d_model) encoder output -> (B, T, d_model).

        tgt_key_padding_mask: (B, T) bool, True at target padding, or None.
        memory_key_padding_mask: (B, S) bool, True at source padding, or None.
        """
        x = self.sublayer1(
            x, lambda h: self.self_attn(h, key_padding_mask=tgt_key_padding_mask, is_causal=True)[0]
        )  # (B, T, d)
        x = self.sublayer2(
            x, lambda h: self.cross_attn(h, memory, memory, key_padding_mask=memory_key_padding_mask)[0]
        )  # (B, T, d)
        return self.sublayer3(x, self.feed_forward)  # (B, T, d)


# ----------------------------------------------------------------------------- Task 3: the stacks


class Encoder(nn.Module):
    """n_layers independent EncoderBlocks, then a final LayerNorm for pre-LN stacks only.

    A pre-LN block leaves its output un-normalised (the residual stream), so the stack ends
    with one LayerNorm; a post-LN block already ends in a norm, so the stack adds none.

    Submodules: ``layers`` (nn.ModuleList of EncoderBlock), ``norm`` (LayerNorm, or None when norm_first=False).
    """

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        norm_first: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [EncoderBlock(d_model, n_heads, d_ff, dropout, norm_first, eps) for _ in range(n_layers)]
        )
        self.norm = LayerNorm(d_model, eps=eps) if norm_first else None

    def forward(self, x: torch.Tensor, *, src_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, S, d_model) embedded source -> memory (B, S, d_model)."""
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=src_key_padding_mask)  # (B, S, d)
        return x if self.norm is None else self.norm(x)


class Decoder(nn.Module):
    """n_layers independent DecoderBlocks, then a final LayerNorm for pre-LN stacks only.

    Submodules: ``layers`` (nn.ModuleList of DecoderBlock), ``norm`` (LayerNorm, or None when norm_first=False).
    """

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_ff: int | None = None,
        dropout: float = 0.0,
        norm_first: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [DecoderBlock(d_model, n_heads, d_ff, dropout, norm_first, eps) for _ in range(n_layers)]
        )
        self.norm = LayerNorm(d_model, eps=eps) if norm_first else None

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        *,
        tgt_key_padding_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, T, d_model) embedded target, memory: (B, S, d_model) -> (B, T, d_model)."""
        for layer in self.layers:
            x = layer(
                x, memory, tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask
            )  # (B, T, d)
        return x if self.norm is None else self.norm(x)


# ----------------------------------------------------------------------------- Task 4: the encoder–decoder


class Transformer(nn.Module):
    """The encoder–decoder Transformer of "Attention Is All You Need".

    source ids -> TokenEmbedding (x sqrt(d_model)) + positions -> Encoder -> memory
    target ids -> TokenEmbedding (x sqrt(d_model)) + positions -> Decoder(., memory) -> lm_head -> logits

    Submodules: ``src_embed``, ``tgt_embed`` (TokenEmbedding), ``pos`` (SinusoidalPositionalEncoding, shared
    by source and target, with the config's dropout), ``encoder`` (Encoder), ``decoder`` (Decoder),
    ``lm_head`` (nn.Linear(d_model, tgt_vocab_size), with bias).
    Every weight matrix starts Xavier-uniform, as in torch.nn.Transformer and the Annotated Transformer.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.src_embed = TokenEmbedding(c.src_vocab_size, c.d_model)
        self.tgt_embed = TokenEmbedding(c.tgt_vocab_size, c.d_model)
        self.pos = SinusoidalPositionalEncoding(c.d_model, max_len=c.max_len, dropout=c.dropout)
        self.encoder = Encoder(c.n_encoder_layers, c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first, c.eps)
        self.decoder = Decoder(c.n_decoder_layers, c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first, c.eps)
        self.lm_head = nn.Linear(c.d_model, c.tgt_vocab_size)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def encode(self, src: torch.Tensor, *, src_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src: (B, S) token ids -> memory (B, S, d_model)."""
        x = self.pos(self.src_embed(src))  # (B, S, d)
        return self.encoder(x, src_key_padding_mask=src_key_padding_mask)

    def decode(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        *,
        tgt_key_padding_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tgt: (B, T) token ids, memory: (B, S, d_model) -> logits (B, T, tgt_vocab_size).

        logits[:, t] scores the token that comes *after* tgt[:, t]; softmax over the last axis gives probabilities.
        """
        y = self.pos(self.tgt_embed(tgt))  # (B, T, d)
        y = self.decoder(
            y, memory, tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask
        )  # (B, T, d)
        return self.lm_head(y)  # (B, T, V)

    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        *,
        src_key_padding_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """src: (B, S), tgt: (B, T) token ids -> logits (B, T, tgt_vocab_size) (no softmax)."""
        memory = self.encode(src, src_key_padding_mask=src_key_padding_mask)  # (B, S, d)
        return self.decode(
            tgt, memory, tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=src_key_padding_mask
        )


# ----------------------------------------------------------------------------- Task 5: greedy decoding


@torch.no_grad()
def greedy_decode(
    model: Transformer,
    src: torch.Tensor,
    *,
    max_len: int,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
    src_key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generate target ids token by token, always taking the most likely next token.

    Encodes ``src`` once; then, starting from [BOS], runs the decoder on the whole prefix,
    takes the argmax of the logits at the *last* position, and appends it. A sequence is
    finished once it has produced EOS; after that it is filled with ``pad_id``. The loop ends
    when every sequence has finished or the output holds ``max_len`` tokens.

    Args:
        src: (B, S) source ids.  src_key_padding_mask: (B, S) bool, True at padding, or None.
        max_len: the longest output, BOS and EOS included (>= 1).
    Returns:
        (B, L) int64 ids with 1 <= L <= max_len: column 0 is BOS; each row is BOS, tokens, EOS, PAD...
        (or BOS, tokens... cut at max_len); L is as short as possible.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1 (room for BOS), got {max_len}")
    B = src.size(0)
    memory = model.encode(src, src_key_padding_mask=src_key_padding_mask)  # (B, S, d)
    ys = torch.full((B, 1), bos_id, dtype=torch.long, device=src.device)  # (B, 1)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)  # (B,)
    while ys.size(1) < max_len and not bool(finished.all()):
        logits = model.decode(ys, memory, memory_key_padding_mask=src_key_padding_mask)  # (B, t, V)
        next_id = logits[:, -1].argmax(dim=-1)  # (B,) the prediction after the last token
        next_id = next_id.masked_fill(finished, pad_id)  # finished rows only grow padding
        ys = torch.cat([ys, next_id[:, None]], dim=1)  # (B, t+1)
        finished |= next_id == eos_id
    return ys


# ----------------------------------------------------------------------------- provided: a toy task to learn
# Not a task: this trains *your* Transformer on reversing short sequences, so you can watch it learn.
# The grader's learnability check uses the same function.

PAD, BOS, EOS = 0, 1, 2  # special ids; ids 3 .. vocab_size-1 are the symbols


def reverse_task_data(
    vocab_size: int = 10, length: int = 5, n_test: int = 256, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sequence of ``length`` symbols (ids 3..vocab_size-1), shuffled and split in two.

    Returns (train (N - n_test, length), test (n_test, length)) int64: the test sequences are never trained on.
    """
    n_symbols = vocab_size - 3
    g = torch.Generator().manual_seed(seed)
    codes = torch.randperm(n_symbols**length, generator=g)  # (N,) every sequence once, as a number
    digits = n_symbols ** torch.arange(length - 1, -1, -1)  # (length,) place values
    seqs = 3 + (codes[:, None] // digits) % n_symbols  # (N, length)
    return seqs[n_test:], seqs[:n_test]


def exact_match(model: Transformer, src: torch.Tensor, tgt: torch.Tensor) -> float:
    """Fraction of rows that greedy_decode turns into exactly BOS, tgt, EOS. src, tgt: (N, L)."""
    out = greedy_decode(model, src, max_len=tgt.size(1) + 2, bos_id=BOS, eos_id=EOS, pad_id=PAD)  # (N, <= L+2)
    want = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt, torch.full_like(tgt[:, :1], EOS)], dim=1)  # (N, L+2)
    got = torch.full_like(want, PAD)
    got[:, : out.size(1)] = out[:, : want.size(1)]
    return float((got == want).all(dim=1).float().mean())


class _Adam:
    """torch.optim.Adam's update with its default betas and eps, written out.

    (torch.optim would do the same; its first use also imports torch's compiler stack, about a second.)
    """

    def __init__(self, params: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.params, self.lr, self.betas, self.t = params, lr, betas, 0
        self.m = [torch.zeros_like(p) for p in params]  # running mean of gradients
        self.v = [torch.zeros_like(p) for p in params]  # running mean of squared gradients

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        self.t += 1
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            m.lerp_(p.grad, 1 - b1)  # m = b1 m + (1 - b1) g
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)  # v = b2 v + (1 - b2) g^2
            denom = (v / (1 - b2**self.t)).sqrt_().add_(1e-8)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))


def train_reverse(
    steps: int = 100,
    *,
    vocab_size: int = 10,
    length: int = 5,
    batch_size: int = 128,
    lr: float = 1e-2,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log_every: int = 0,
) -> tuple[Transformer, torch.Tensor]:
    """Train a tiny Transformer to reverse sequences (3 5 4 -> 4 5 3) with teacher forcing.

    The decoder input is BOS + reversed source; the target to predict at each position is
    reversed source + EOS (the input shifted left by one). Cross-entropy on the logits, Adam.

    Returns (the trained model in eval mode, the held-out test sequences (n_test, length)).
    """
    torch.manual_seed(seed)
    train, test = reverse_task_data(vocab_size, length, seed=seed)
    config = TransformerConfig(
        src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, d_model=32, n_heads=4,
        n_encoder_layers=1, n_decoder_layers=1, d_ff=64, dropout=0.0, norm_first=True, max_len=length + 2,
    )  # fmt: skip
    model = Transformer(config).to(device)
    adam = _Adam(list(model.parameters()), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(1, steps + 1):
        src = train[torch.randint(len(train), (batch_size,), generator=g)].to(device)  # (B, L)
        rev = src.flip(1)  # (B, L) the answer
        bos = torch.full_like(src[:, :1], BOS)  # (B, 1)
        eos = torch.full_like(src[:, :1], EOS)  # (B, 1)
        tgt_in = torch.cat([bos, rev], dim=1)  # (B, L+1) what the decoder reads
        tgt_out = torch.cat([rev, eos], dim=1)  # (B, L+1) what it must predict at each position
        logits = model(src, tgt_in)  # (B, L+1, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab_size), tgt_out.reshape(-1))  # (B*(L+1), V)
        model.zero_grad(set_to_none=True)
        loss.backward()
        adam.lr = lr * (1 - (step - 1) / steps)  # linear decay to 0: big steps first, fine ones at the end
        adam.step()
        if log_every and (step % log_every == 0 or step == 1):
            print(f"step {step:4d}  loss {loss.item():.4f}")
    return model.eval(), test.to(device)


# The lesson's demo (train_reverse, exact_match, greedy_decode) runs with `nox -s example -- 1.6`
# (stages/1.6-transformer-block/example.py), from the repository root or anywhere else.
