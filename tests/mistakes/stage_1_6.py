from tests.mistakes import Mistake

FAST = "not learns"  # every check but the learnability one (2 s): the named checks are the fast ones

MISTAKES = [
    Mistake(
        "1.6",
        "decoder self-attention not causal",
        "self.self_attn(h, key_padding_mask=tgt_key_padding_mask, is_causal=True)[0]",
        "self.self_attn(h, key_padding_mask=tgt_key_padding_mask)[0]",
        "decoder self-attention not causal",
    ),
    Mistake(
        "1.6",
        "cross-attention attends to the decoder's own states",
        "self.cross_attn(h, memory, memory, key_padding_mask=memory_key_padding_mask)[0]",
        "self.cross_attn(h, h, h, key_padding_mask=memory_key_padding_mask)[0]",
        "cross-attention attends to the decoder's own states instead of the encoder memory",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "source padding mask not passed to cross-attention",
        "self.cross_attn(h, memory, memory, key_padding_mask=memory_key_padding_mask)[0]",
        "self.cross_attn(h, memory, memory)[0]",
        "source padding mask not passed to cross-attention",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "missing final LayerNorm in a pre-LN stack",
        "[EncoderBlock(d_model, n_heads, d_ff, dropout, norm_first, eps) for _ in range(n_layers)]\n"
        "        )\n        self.norm = LayerNorm(d_model, eps=eps) if norm_first else None",
        "[EncoderBlock(d_model, n_heads, d_ff, dropout, norm_first, eps) for _ in range(n_layers)]\n"
        "        )\n        self.norm = None",
        "missing final LayerNorm in a pre-LN stack",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "final LayerNorm added to a post-LN stack",
        "[DecoderBlock(d_model, n_heads, d_ff, dropout, norm_first, eps) for _ in range(n_layers)]\n"
        "        )\n        self.norm = LayerNorm(d_model, eps=eps) if norm_first else None",
        "[DecoderBlock(d_model, n_heads, d_ff, dropout, norm_first, eps) for _ in range(n_layers)]\n"
        "        )\n        self.norm = LayerNorm(d_model, eps=eps)",
        "final LayerNorm added to a post-LN stack",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "the same block repeated (shared weights)",
        "[EncoderBlock(d_model, n_heads, d_ff, dropout, norm_first, eps) for _ in range(n_layers)]",
        "[EncoderBlock(d_model, n_heads, d_ff, dropout, norm_first, eps)] * n_layers",
        "the same block repeated",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "pre-LN and post-LN mixed up",
        "        self.sublayer1 = SublayerConnection(d_model, dropout=dropout, norm_first=norm_first, eps=eps)\n"
        "        self.sublayer2 = SublayerConnection(d_model, dropout=dropout, norm_first=norm_first, eps=eps)\n\n"
        "    def forward(self, x: torch.Tensor, *, src_key_padding_mask",
        "        self.sublayer1 = SublayerConnection(d_model, dropout=dropout, eps=eps)\n"
        "        self.sublayer2 = SublayerConnection(d_model, dropout=dropout, eps=eps)\n\n"
        "    def forward(self, x: torch.Tensor, *, src_key_padding_mask",
        "pre-LN and post-LN mixed up",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "encoder self-attention masked causally",
        "self.self_attn(h, key_padding_mask=src_key_padding_mask)[0]",
        "self.self_attn(h, key_padding_mask=src_key_padding_mask, is_causal=True)[0]",
        "encoder self-attention masked causally",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "positional encoding missing",
        "x = self.pos(self.src_embed(src))  # (B, S, d)",
        "x = self.src_embed(src)  # (B, S, d)",
        "positional encoding missing",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "token embeddings not scaled by sqrt(d_model)",
        "self.src_embed = TokenEmbedding(c.src_vocab_size, c.d_model)\n"
        "        self.tgt_embed = TokenEmbedding(c.tgt_vocab_size, c.d_model)",
        "self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model)\n"
        "        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.d_model)",
        "token embeddings not scaled by sqrt(d_model)",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "target embedded with the source table",
        "y = self.pos(self.tgt_embed(tgt))  # (B, T, d)",
        "y = self.pos(self.src_embed(tgt))  # (B, T, d)",
        "target ids embedded with the source embedding table",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "softmax applied in forward",
        "return self.lm_head(y)  # (B, T, V)",
        "return self.lm_head(y).softmax(dim=-1)  # (B, T, V)",
        "softmax applied in forward",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "greedy decoding does not stop at EOS",
        "    while ys.size(1) < max_len and not bool(finished.all()):\n"
        "        logits = model.decode(ys, memory, memory_key_padding_mask=src_key_padding_mask)  # (B, t, V)\n"
        "        next_id = logits[:, -1].argmax(dim=-1)  # (B,) the prediction after the last token\n"
        "        next_id = next_id.masked_fill(finished, pad_id)  # finished rows only grow padding\n",
        "    while ys.size(1) < max_len:\n"
        "        logits = model.decode(ys, memory, memory_key_padding_mask=src_key_padding_mask)  # (B, t, V)\n"
        "        next_id = logits[:, -1].argmax(dim=-1)  # (B,) the prediction after the last token\n",
        "greedy decoding does not stop at EOS",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "finished sequences not padded after EOS",
        "        next_id = next_id.masked_fill(finished, pad_id)  # finished rows only grow padding\n",
        "",
        "finished sequences not padded after EOS",
        check=FAST,
    ),
    Mistake(
        "1.6",
        "next token read from the first position",
        "next_id = logits[:, -1].argmax(dim=-1)",
        "next_id = logits[:, 0].argmax(dim=-1)",
        "next token read from the first position",
        check=FAST,
    ),
]
