from tests.mistakes import Mistake

_SOFTMAX_BODY = (
    "x_max = np.max(x, axis=axis, keepdims=True)  # (..., 1) along `axis`: the largest entry of each slice\n"
    "    e = np.exp(x - x_max)  # same shape as x; entries in (0, 1], the max gives exp(0) = 1\n"
    "    return e / np.sum(e, axis=axis, keepdims=True)"
)
_MASKING = (
    "        scores = np.where(mask, -np.inf, scores)  # blocked: exp(-inf) = 0, so weight exactly 0\n"
    "        empty = np.all(mask, axis=-1, keepdims=True)  # (..., Tq, 1): queries that may attend to no key\n"
    "        scores = np.where(empty, 0.0, scores)  # keep softmax away from -inf - (-inf) = NaN on those rows ...\n"
    "    weights = softmax(scores, axis=-1)  # (..., Tq, Tk): normalise over the keys\n"
    "    if mask is not None:\n"
    "        weights = np.where(empty, 0.0, weights)  # ... and give them zero weights: they attend to nothing\n"
)
_CAUSAL = "np.triu(np.ones((T, T), dtype=bool), k=1)"

MISTAKES = [
    # Task 1: softmax
    Mistake(
        "1.2", "softmax over the wrong axis",
        "weights = softmax(scores, axis=-1)", "weights = softmax(scores, axis=-2)",
        "softmax over the wrong axis",
    ),
    Mistake(
        "1.2", "sum without keepdims=True",
        "return e / np.sum(e, axis=axis, keepdims=True)", "return e / np.sum(e, axis=axis)",
        "sum without keepdims=True",
    ),
    Mistake(
        "1.2", "the axis argument ignored",
        _SOFTMAX_BODY,
        "x_max = np.max(x, axis=-1, keepdims=True)\n    e = np.exp(x - x_max)\n"
        "    return e / np.sum(e, axis=-1, keepdims=True)",
        "axis argument ignored",
    ),
    Mistake(
        "1.2", "no max subtraction",
        "e = np.exp(x - x_max)", "e = np.exp(x)",
        "no max subtraction",
    ),
    Mistake(
        "1.2", "subtracted the max of the whole array",
        "x_max = np.max(x, axis=axis, keepdims=True)", "x_max = np.max(x)",
        "max of the whole array",
    ),
    Mistake(
        "1.2", "softmax modified its input in place",
        "e = np.exp(x - x_max)", "x -= x_max\n    e = np.exp(x)",
        "modified its input in place",
    ),
    # Task 2: scaled_dot_product_attention
    Mistake(
        "1.2", "scaled by d_k instead of sqrt(d_k)",
        "/ math.sqrt(d_k)", "/ d_k",
        "scaled by d_k instead of sqrt(d_k)",
    ),
    Mistake(
        "1.2", "no scaling by sqrt(d_k)",
        "scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(d_k)", "scores = q @ np.swapaxes(k, -1, -2)",
        "no scaling by sqrt(d_k)",
    ),
    Mistake(
        "1.2", "the mask applied after the softmax",
        _MASKING,
        "        pass\n"
        "    weights = softmax(scores, axis=-1)\n"
        "    if mask is not None:\n"
        "        weights = np.where(mask, 0.0, weights)\n",
        "mask applied after the softmax",
    ),
    Mistake(
        "1.2", "blocked scores filled with 0 instead of -inf",
        "scores = np.where(mask, -np.inf, scores)", "scores = np.where(mask, 0.0, scores)",
        "filled with 0 instead of -inf",
    ),
    Mistake(
        "1.2", "mask convention inverted",
        "scores = np.where(mask, -np.inf, scores)", "scores = np.where(~mask, -np.inf, scores)",
        "mask convention inverted",
    ),
    Mistake(
        "1.2", "fully-masked row not special-cased",
        _MASKING,
        "        scores = np.where(mask, -np.inf, scores)\n    weights = softmax(scores, axis=-1)\n",
        "fully-masked row not special-cased",
    ),
    Mistake(
        "1.2", "blocked scores filled with a large finite number",
        _MASKING,
        "        scores = np.where(mask, -1e9, scores)\n    weights = softmax(scores, axis=-1)\n",
        "large finite number",
    ),
    # Task 3: causal_mask
    Mistake(
        "1.2", "lower triangle instead of upper",
        _CAUSAL, "np.tril(np.ones((T, T), dtype=bool))",
        "lower triangle instead of upper",
    ),
    Mistake(
        "1.2", "diagonal blocked too",
        _CAUSAL, "np.triu(np.ones((T, T), dtype=bool), k=0)",
        "diagonal blocked too",
    ),
    Mistake(
        "1.2", "past blocked instead of the future",
        _CAUSAL, "np.tril(np.ones((T, T), dtype=bool), k=-1)",
        "past blocked instead of the future",
    ),
    Mistake(
        "1.2", "a float mask instead of bool",
        _CAUSAL, "np.triu(np.ones((T, T)), k=1)",
        "float mask instead of bool",
    ),
    # Task 4: self_attention
    Mistake(
        "1.2", "scaled by sqrt(d_model) instead of sqrt(d_k)",
        "    return scaled_dot_product_attention(q, k, v, mask)",
        "    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(x.shape[-1])\n"
        "    if mask is not None:\n"
        "        scores = np.where(mask, -np.inf, scores)\n"
        "    weights = softmax(scores, axis=-1)\n"
        "    return weights @ v, weights",
        "scaled by sqrt(d_model) instead of sqrt(d_k)",
    ),
    Mistake(
        "1.2", "values not projected",
        "v = x @ w_v  # (..., T, d_v)", "v = x  # (..., T, d_v)",
        "values not projected",
    ),
    Mistake(
        "1.2", "a causal mask applied when mask is None",
        "    q = x @ w_q  # (..., T, d_k)",
        "    if mask is None:\n        mask = causal_mask(x.shape[-2])\n    q = x @ w_q  # (..., T, d_k)",
        "causal mask applied when mask is None",
    ),
]
