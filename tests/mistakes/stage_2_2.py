from tests.mistakes import Mistake

MISTAKES = [
    Mistake(
        "2.2",
        "no causal mask",
        "x = self.attn_sub(x, lambda h: self.attn(h, is_causal=True)[0])",
        "x = self.attn_sub(x, lambda h: self.attn(h)[0])",
        "no causal mask",
    ),
    Mistake(
        "2.2",
        "post-LN instead of pre-LN",
        "        self.attn_sub = SublayerConnection(c.d_model, dropout=c.dropout, norm_first=True)\n"
        "        self.ff_sub = SublayerConnection(c.d_model, dropout=c.dropout, norm_first=True)",
        "        self.attn_sub = SublayerConnection(c.d_model, dropout=c.dropout, norm_first=False)\n"
        "        self.ff_sub = SublayerConnection(c.d_model, dropout=c.dropout, norm_first=False)",
        "post-LN instead of pre-LN",
    ),
    Mistake(
        "2.2",
        "activation ignored (exact GELU for gelu_tanh)",
        '"gelu_tanh": {"approximate": "tanh"},',
        '"gelu_tanh": {"approximate": "none"},',
        "the 'gelu' activation used where 'gelu_tanh' was asked for",
    ),
    Mistake(
        "2.2",
        "head not tied",
        "            self.lm_head.weight = self.tok_emb.weight  # one Parameter in two places, not a copy",
        "            pass",
        "LM head not tied to the token embedding",
    ),
    Mistake(
        "2.2",
        "head tied by copying",
        "            self.lm_head.weight = self.tok_emb.weight  # one Parameter in two places, not a copy\n"
        "        self.init_weights()",
        "            pass\n"
        "        self.init_weights()\n"
        "        if c.tie_weights:\n"
        "            self.lm_head.weight = nn.Parameter(self.tok_emb.weight.detach().clone())",
        "LM head not tied to the token embedding",
    ),
    Mistake(
        "2.2",
        "positions not added",
        "x = self.drop(self.pos_emb(x))",
        "x = self.drop(x)",
        "positions not added",
    ),
    Mistake(
        "2.2",
        "final LayerNorm missing",
        "x = self.ln_f(x)  # (B, T, d)",
        "x = x  # (B, T, d)",
        "final LayerNorm (ln_f) missing",
    ),
    Mistake(
        "2.2",
        "sqrt(d_model) scaling kept from 1.1",
        "x = self.tok_emb(ids)  # (B, T, d)",
        "x = self.tok_emb(ids) * math.sqrt(self.config.d_model)  # (B, T, d)",
        "token embedding scaled by sqrt(d_model)",
    ),
    Mistake(
        "2.2",
        "residual-projection init not scaled",
        "residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)",
        "residual_std = 0.02",
        "residual-projection init not scaled by 1/sqrt(2·n_layers)",
    ),
    Mistake(
        "2.2",
        "residual projections scaled by 1/sqrt(n_layers)",
        "residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)",
        "residual_std = 0.02 / math.sqrt(self.config.n_layers)",
        "scaled by 1/sqrt(n_layers) instead of 1/sqrt(2·n_layers)",
    ),
    Mistake(
        "2.2",
        "PyTorch's default init kept",
        "        self.init_weights()\n",
        "",
        "PyTorch's default nn.Linear init kept",
    ),
    Mistake(
        "2.2",
        "targets shifted again inside forward",
        "logits.reshape(B * T, V).float(), targets.reshape(B * T), ignore_index=IGNORE_INDEX",
        "logits[:, :-1].reshape(B * (T - 1), V).float(), targets[:, 1:].reshape(B * (T - 1)), ignore_index=IGNORE_INDEX",
        "targets shifted again inside forward",
    ),
    Mistake(
        "2.2",
        "no block_size check",
        "        if T > self.config.block_size:\n            raise ValueError(",
        "        if False:\n            raise ValueError(",
        "no block_size check in GPT.forward",
    ),
    Mistake(
        "2.2",
        "tied head counted twice",
        "n = sum(p.numel() for p in self.parameters())",
        "n = sum(p.numel() for p in self.state_dict().values())",
        "the tied head counted twice",
    ),
    Mistake(
        "2.2",
        "only the position table subtracted (nanoGPT's convention)",
        "n -= self.tok_emb.weight.numel() + self.pos_emb.embedding.weight.numel()",
        "n -= self.pos_emb.embedding.weight.numel()",
        "only the position table subtracted",
    ),
    Mistake(
        "2.2",
        "Conv1D weights not transposed",
        "    return w.t()",
        "    return w",
        "Conv1D weights not transposed",
    ),
]
