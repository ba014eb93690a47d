"""Stage 2.1's pictures (``nox -s show -- 2.1``): compression as merges are added, and what the merges learned.

Each ``data`` function runs the stage's module ``m`` (yours or the reference); see shared/figures.py.
The text is generated from a seed (the same on every machine and Python version), not read from disk.
"""

from __future__ import annotations

import functools
import random
from types import ModuleType
from typing import Any

from shared.figures import Figure

N_MERGES = 300  # the tokenizer trained for the pictures: 256 + 300 merges + <|endoftext|>
STEPS = list(range(0, N_MERGES + 1, 25))  # bytes per token measured with the first k merges

_WORDS = (
    "the of and to in is that it was for on are with as be at by this have from or one had not but what all "
    "were when we there can an your which their said if do will each about how up out them then she many some "
    "so these would other into has more her two like him see time could no make than first been its who now "
    "people my made over did down only way find use may water long little very after words called just where "
    "most know tokenizer token merge merges bytes pair pairs training text model models learning attention "
    "transformer naïve café résumé straße 東京 日本語 数据 😀 🚀"
).split()


def _text(seed: int, n_words: int) -> str:
    """A seeded text with Zipf-like word frequencies, punctuation, numbers and line breaks."""
    rng = random.Random(seed)
    weights = [1.0 / (r + 1) for r in range(len(_WORDS))]
    out: list[str] = []
    for _ in range(n_words):
        word = rng.choices(_WORDS, weights)[0]
        if rng.random() < 0.08:
            word = word.capitalize()
        if rng.random() < 0.04:
            word = str(rng.randrange(0, 2000))
        r = rng.random()
        out += [word, ", " if r < 0.06 else ". " if r < 0.1 else "\n" if r < 0.12 else " "]
    return "".join(out)


@functools.lru_cache(maxsize=4)
def _trained(m: ModuleType) -> Any:
    return m.BPETokenizer.train(_text(1, 3000), 256 + N_MERGES + 1)


def compression_data(m: ModuleType) -> dict[str, Any]:
    """Bytes per token on a held-out text, using only the first k merges of one trained tokenizer."""
    tok = _trained(m)
    held = _text(2, 1500)
    n_bytes = len(held.encode("utf-8"))
    ranked = list(tok.merges.items())
    steps = [k for k in STEPS if k <= len(ranked)]
    bpt = [n_bytes / len(m.BPETokenizer(dict(ranked[:k]), {}).encode(held)) for k in steps]
    return {"merges": steps, "bytes_per_token": bpt}


def draw_compression(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    ax.plot(data["merges"], data["bytes_per_token"], "o-", ms=3, lw=1.4)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("merges used (in rank order)", fontsize=8)
    ax.set_ylabel("bytes per token, held-out text", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def lengths_data(m: ModuleType) -> dict[str, Any]:
    """How many bytes each learned token stands for, and the longest ASCII ones."""
    tok = _trained(m)
    tokens = [tok.vocab[new_id] for new_id in tok.merges.values()]
    lengths = [len(t) for t in tokens]
    longest = sorted((t for t in tokens if t.isascii()), key=lambda t: (-len(t), t))[:6]  # ASCII: any font draws it
    return {
        "lengths": list(range(2, max(lengths, default=2) + 1)),
        "counts": [lengths.count(n) for n in range(2, max(lengths, default=2) + 1)],
        "longest": [t.decode("utf-8", errors="replace") for t in longest],
    }


def draw_lengths(panel: Any, data: dict[str, Any]) -> None:
    ax = panel.subplots()
    ax.bar(data["lengths"], data["counts"], color="tab:blue")
    ax.set_xlabel("bytes in the token", fontsize=8)
    ax.set_ylabel("learned tokens", fontsize=8)
    ax.tick_params(labelsize=7)
    shown = ", ".join(repr(s) for s in data["longest"][:4])
    ax.set_title(f"longest: {shown}", fontsize=7)


FIGURES: list[Figure] = [
    Figure(
        "compression-by-merges", "Every merge makes text shorter, by less and less", compression_data, draw_compression,
        caption="Bytes per token on held-out text rise from 1.0 (bytes alone) as merges are added; the first merges win the most.",
        size=(4.2, 3.0),
    ),
    Figure(
        "token-lengths", "What the merges learned", lengths_data, draw_lengths,
        caption="Most learned tokens are short pieces; the longest are whole frequent words with their leading space.",
        size=(4.2, 3.0),
    ),
]  # fmt: skip
