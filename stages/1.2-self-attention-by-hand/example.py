"""Stage 1.2's worked example: ``nox -s example -- 1.2 [--version solution]`` (3 tokens, d_model = d_k = d_v = 4)."""

from __future__ import annotations

import numpy as np

from grader.example import side_by_side
from shared.loader import load

att = load("1.2")  # your skeleton, or the reference with --version solution
np.set_printoptions(precision=4, suppress=True)

X = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]], dtype=float)  # (T=3, d_model=4)
W_q = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 1, 0]], dtype=float)
W_k = np.array([[0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=float)
W_v = np.array([[1, 0, 2, 0], [0, 1, 0, 2], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=float)

Q, K, V = X @ W_q, X @ W_k, X @ W_v  # (3, 4) each
print(side_by_side(f"Q = X @ W_q\n{Q}", f"K = X @ W_k\n{K}", f"V = X @ W_v\n{V}"))
print()
print(f"Q @ K.T\n{Q @ K.T}")
print()
print(f"Q @ K.T / 2\n{Q @ K.T / 2}")
print()
out, weights = att.self_attention(X, W_q, W_k, W_v)
print(f"weights\n{weights}")
print()
print(f"output = weights @ V\n{out}")
print()

mask = att.causal_mask(3)
scores = np.where(mask, -np.inf, Q @ K.T / 2)
c_out, c_weights = att.self_attention(X, W_q, W_k, W_v, mask=mask)
print(side_by_side(f"causal_mask(3)\n{mask}", f"masked scores\n{scores}", f"causal weights\n{c_weights}",
                   f"causal output\n{c_out}"))  # fmt: skip
print()

empty_row = np.array([[True, True, True], [False, True, False], [False, False, False]])
e_out, e_weights = att.scaled_dot_product_attention(Q, K, V, empty_row)
print(side_by_side(f"weights\n{e_weights}", f"output\n{e_out}"))
