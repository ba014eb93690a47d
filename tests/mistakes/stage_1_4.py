from tests.mistakes import Mistake

MISTAKES = [
    Mistake(
        "1.4", "heads split by a reshape without the transpose",
        "return x.view(B, T, n_heads, d_model // n_heads).transpose(1, 2)",
        "return x.reshape(B, n_heads, T, d_model // n_heads)",
        "reshape without the transpose",
    ),
    Mistake(
        "1.4", "scores scaled by sqrt(d_model) instead of sqrt(d_head)",
        "(q * (1.0 / math.sqrt(self.d_head)))",
        "(q * (1.0 / math.sqrt(self.d_model)))",
        "sqrt(d_model) instead of sqrt(d_head)",
    ),
    Mistake(
        "1.4", "the output projection forgotten",
        "out = self.out_proj(merge_heads(out))",
        "out = merge_heads(out)",
        "output projection (out_proj) forgotten",
    ),
    Mistake(
        "1.4", "key_padding_mask broadcast over the wrong axis",
        "key_padding_mask.to(torch.bool).view(B, 1, 1, Tk)",
        "key_padding_mask.to(torch.bool).view(B, 1, Tk, 1)",
        "broadcast over the wrong axis",
    ),
    Mistake(
        "1.4", "softmax over the query axis",
        "weights = scores.softmax(dim=-1)",
        "weights = scores.softmax(dim=-2)",
        "softmax over the query axis",
    ),
    Mistake(
        "1.4", "causal mask points the wrong way",
        "dtype=torch.bool, device=device).triu(1)",
        "dtype=torch.bool, device=device).tril(0)",
        "causal mask points the wrong way",
    ),
    Mistake(
        "1.4", "per-head attn_mask in the wrong order",
        "m = attn_mask.view(B, n_heads, Tq, Tk)",
        "m = attn_mask.view(n_heads, B, Tq, Tk).transpose(0, 1)",
        "viewed as (n_heads, B, Tq, Tk)",
    ),
    Mistake(
        "1.4", "float attn_mask ignored",
        "bias = m.masked_fill(neg_inf, 0.0)",
        "bias = None",
        "float attn_mask ignored",
    ),
    Mistake(
        "1.4", "weights summed over the heads instead of averaged",
        "weights = weights.mean(dim=1)",
        "weights = weights.sum(dim=1)",
        "summed over the heads",
    ),
    Mistake(
        "1.4", "value defaulted to query instead of key",
        "value = key if value is None else value",
        "value = query if value is None else value",
        "value defaulted to query",
    ),
    Mistake(
        "1.4", "boolean mask passed to SDPA without inverting it",
        "mask = ~blocked",
        "mask = blocked",
        "without inverting it",
    ),
    Mistake(
        "1.4", "dropout left on in SDPA in eval mode",
        "p = self.dropout.p if self.training else 0.0",
        "p = self.dropout.p",
        "dropout_p=0",
    ),
    Mistake(
        "1.4", "fully masked rows zeroed but not unblocked",
        "blocked = blocked & ~empty",
        "blocked = blocked",
        "contain NaN/inf",
    ),
]
