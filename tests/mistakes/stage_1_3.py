from tests.mistakes import Mistake

_ZEROING = (
    '        scores = scores.masked_fill(mask, float("-inf"))\n'
    "    weights = scores.softmax(dim=-1)  # (..., Tq, Tk): each query's weights over the keys sum to 1\n"
    "    if mask is not None:\n"
    "        # A row with every key blocked is all -inf; its softmax is 0/0 = NaN. Define it as zeros.\n"
    "        weights = weights.masked_fill(mask.all(dim=-1, keepdim=True), 0.0)\n"
)

MISTAKES = [
    Mistake(
        "1.3", "softmax over the query axis",
        "weights = scores.softmax(dim=-1)",
        "weights = scores.softmax(dim=-2)",
        "softmax over the query axis",
    ),
    Mistake(
        "1.3", "scores divided by d_head instead of sqrt(d_head)",
        "scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)",
        "scores = q @ k.transpose(-2, -1) / d_k",
        "divided by d_head instead of sqrt(d_head)",
    ),
    Mistake(
        "1.3", "causal mask points the wrong way (tril instead of triu)",
        "dtype=torch.bool, device=device).triu(diagonal=1)",
        "dtype=torch.bool, device=device).tril(diagonal=0)",
        "causal mask points the wrong way",
    ),
    Mistake(
        "1.3", "causal mask hides the diagonal",
        "dtype=torch.bool, device=device).triu(diagonal=1)",
        "dtype=torch.bool, device=device).triu(diagonal=0)",
        "causal mask hides the diagonal",
    ),
    Mistake(
        "1.3", "masked scores filled with 0 instead of -inf",
        'scores = scores.masked_fill(mask, float("-inf"))',
        "scores = scores.masked_fill(mask, 0.0)",
        "filled with 0 instead of -inf",
    ),
    Mistake(
        "1.3", "masked scores filled with a large finite number (-1e9) instead of -inf",
        _ZEROING,
        "        scores = scores.masked_fill(mask, -1e9)\n    weights = scores.softmax(dim=-1)\n",
        "filled with a large finite number",
    ),
    Mistake(
        "1.3", "mask applied after the softmax",
        _ZEROING,
        "        pass\n    weights = scores.softmax(dim=-1)\n    if mask is not None:\n"
        "        weights = weights.masked_fill(mask, 0.0)\n",
        "mask applied after the softmax",
    ),
    Mistake(
        "1.3", "key_padding_mask applied to queries",
        "pad = key_padding_mask[:, None, :]",
        "pad = key_padding_mask[:, :, None]",
        "key_padding_mask applied to queries",
    ),
    Mistake(
        "1.3", "fully masked rows left as NaN",
        "        weights = weights.masked_fill(mask.all(dim=-1, keepdim=True), 0.0)\n",
        "        pass\n",
        "0/0 = NaN",
    ),
    Mistake(
        "1.3", "fully masked rows zeroed in place",
        "weights = weights.masked_fill(mask.all(dim=-1, keepdim=True), 0.0)",
        "weights.masked_fill_(mask.all(dim=-1, keepdim=True), 0.0)",
        "modified in place",
    ),
    Mistake(
        "1.3", "dropout applied to the output instead of the weights",
        "        weights = dropout(weights)\n    return weights @ v, weights",
        "        return dropout(weights @ v), weights\n    return weights @ v, weights",
        "dropout applied to the output",
    ),
]
