"""Independent reference code for stage 2.1's checks (not graded, never imported by learners' code).

Reference semantics:
- UTF-8 and invalid-byte handling: Python's own ``str.encode("utf-8")`` and
  ``bytes.decode("utf-8", errors="replace")`` (U+FFFD for each maximal invalid subsequence).
- Pre-tokenization: GPT-2's pattern, verbatim from OpenAI's gpt-2 ``src/encoder.py``, compiled with
  the ``regex`` package as GPT-2 does (``import regex as re``).
- Encoding: GPT-2's ``Encoder.bpe``: within a chunk, repeatedly merge the pair of lowest rank.
- Training: BPE as in Sennrich et al. (2016), Algorithm 1, on bytes (GPT-2), recounting every pair
  before every merge (the naive algorithm: slow, obviously right), with the lesson's tie rule:
  the most frequent pair, ties to the smallest pair (left id, right id).

Each function can also compute what a named mistake produces, so that the checks can recognise it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache

import regex

ENDOFTEXT = "<|endoftext|>"
GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

Pair = tuple[int, int]


# ----------------------------------------------------------------------------- the small parts


def pretokenize(text: str) -> list[str]:
    return GPT2_PATTERN.findall(text)


def split_on_special(text: str, specials: Sequence[str]) -> list[str]:
    """Pieces of ``text`` with each special-token occurrence its own piece, longest token first."""
    specials = sorted(set(specials), key=len, reverse=True)
    out: list[str] = []
    i, start = 0, 0
    while i < len(text):
        hit = next((s for s in specials if text.startswith(s, i)), None)
        if hit is None:
            i += 1
            continue
        if start < i:
            out.append(text[start:i])
        out.append(hit)
        i += len(hit)
        start = i
    if start < len(text):
        out.append(text[start:])
    return out


def pair_counts(ids: Sequence[int]) -> dict[Pair, int]:
    counts: dict[Pair, int] = {}
    for i in range(len(ids) - 1):
        counts[(ids[i], ids[i + 1])] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def merge(ids: Sequence[int], pair: Pair, new_id: int, *, mistake: str = "") -> list[int]:
    """One merge, left to right, a replaced pair consumed; or a named mistake's version."""
    ids = list(ids)
    if mistake == "from the right":
        return merge(ids[::-1], (pair[1], pair[0]), new_id)[::-1]
    out: list[int] = []
    i, done = 0, False
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair and not done:
            out.append(new_id)
            i += 1 if mistake == "no skip" else 2
            done = mistake == "first only"
        else:
            out.append(ids[i])
            i += 1
    return out


def build_vocab(merges: Sequence[Pair], specials: dict[str, int] | None = None) -> dict[int, bytes]:
    vocab = {i: bytes([i]) for i in range(256)}
    for k, (a, b) in enumerate(merges):
        vocab[256 + k] = vocab[a] + vocab[b]
    for s, i in (specials or {}).items():
        vocab[i] = s.encode("utf-8")
    return vocab


# ----------------------------------------------------------------------------- training


TIES: dict[str, str] = {
    "largest": "ties went to the largest pair (max over (count, pair)) instead of the smallest",
    "first": "ties went to the pair seen first in the text (max(counts, key=counts.get)) instead of the smallest pair",
    "bytes_max": "ties went to the lexicographically greatest pair of byte strings instead of the smallest pair of ids",
    "bytes_min": "ties went to the smallest pair of byte strings instead of the smallest pair of ids",
}


def _pick(counts: dict[Pair, int], tie: str, vocab: dict[int, bytes]) -> Pair:
    if tie == "smallest":
        return min(counts, key=lambda p: (-counts[p], p))
    if tie == "largest":
        return max(counts, key=lambda p: (counts[p], p))
    if tie == "first":
        return max(counts, key=counts.__getitem__)  # dicts keep insertion order: first seen wins
    if tie == "bytes_max":
        return max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
    if tie == "bytes_min":
        return min(counts, key=lambda p: (-counts[p], vocab[p[0]], vocab[p[1]]))
    raise ValueError(tie)


@cache
def train(
    text: str,
    n_merges: int,
    specials: Sequence[str] = (ENDOFTEXT,),
    *,
    tie: str = "smallest",
    presplit: bool = True,
    cut_specials: bool = True,
    merge_mistake: str = "",
) -> list[Pair]:
    """The merges, in rank order (merge k makes id 256 + k). Naive: recount all pairs every step.

    Cached (the checks ask for the same few): do not modify the list returned.
    """
    pieces = [p for p in split_on_special(text, specials) if p not in specials] if cut_specials else [text]
    chunks: Counter[str] = Counter()
    for piece in pieces:
        chunks.update(pretokenize(piece) if presplit else [piece])
    words = [list(c.encode("utf-8")) for c in chunks]
    freqs = list(chunks.values())
    vocab = build_vocab([])
    merges: list[Pair] = []
    for k in range(n_merges):
        counts: dict[Pair, int] = {}
        for word, f in zip(words, freqs, strict=True):
            for i in range(len(word) - 1):
                counts[(word[i], word[i + 1])] = counts.get((word[i], word[i + 1]), 0) + f
        if not counts:
            break
        best = _pick(counts, tie, vocab)
        merges.append(best)
        vocab[256 + k] = vocab[best[0]] + vocab[best[1]]
        words = [merge(w, best, 256 + k, mistake=merge_mistake) for w in words]
    return merges


# ----------------------------------------------------------------------------- encoding


ENCODE_MISTAKES: dict[str, str] = {
    "reverse": "merges applied in the wrong order: the last-learned merge first (reversed rank order)",
    "leftmost": "merges applied in the wrong order: the leftmost mergeable pair first instead of the lowest rank",
    "longest": "greedy longest match from the vocabulary instead of BPE merges by rank",
    "single pass": "merges applied in the wrong order: one pass over the text pair by pair instead of lowest rank first",
    "nopresplit": "pre-split ignored: merges applied across GPT-2's chunk boundaries",
}


def encode_chunk(ids: list[int], ranks: dict[Pair, int], vocab: dict[int, bytes], variant: str = "rank") -> list[int]:
    """GPT-2's bpe() on one chunk (lowest rank first), or a named mistake's way."""
    if variant == "reverse":
        for pair, new_id in reversed(list(ranks.items())):
            ids = merge(ids, pair, new_id)
        return ids
    if variant == "longest":
        by_bytes = {b: i for i, b in vocab.items() if i < 256 + len(ranks)}
        data, out, i = bytes(ids), [], 0
        while i < len(data):
            j = max(j for j in range(i + 1, len(data) + 1) if data[i:j] in by_bytes)
            out.append(by_bytes[data[i:j]])
            i = j
        return out
    if variant == "single pass":  # merge neighbours left to right as found, repeat until stable
        changed = True
        while changed:
            changed, out, i = False, [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) in ranks:
                    out.append(ranks[(ids[i], ids[i + 1])])
                    i += 2
                    changed = True
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids
    while len(ids) >= 2:
        pairs = [p for p in zip(ids, ids[1:], strict=False) if p in ranks]
        if not pairs:
            break
        best = pairs[0] if variant == "leftmost" else min(pairs, key=ranks.__getitem__)
        ids = merge(ids, best, ranks[best])
    return ids


def encode(
    text: str,
    merges: Sequence[Pair],
    specials: dict[str, int] | None = None,
    allowed: Sequence[str] = (),
    variant: str = "rank",
) -> list[int]:
    ranks = {p: 256 + k for k, p in enumerate(merges)}
    vocab = build_vocab(merges, specials)
    out: list[int] = []
    for piece in split_on_special(text, list(allowed)):
        if piece in allowed and specials:
            out.append(specials[piece])
            continue
        chunks = [piece] if variant == "nopresplit" else pretokenize(piece)
        for chunk in chunks:
            out += encode_chunk(list(chunk.encode("utf-8")), ranks, vocab, "rank" if variant == "nopresplit" else variant)
    return out


# ----------------------------------------------------------------------------- texts


WORDS = (
    "the of and to in is that it was for on are with as be at by this have from or one had not but what all were "
    "when we there can an your which their said if do will each about how up out them then she many some so these "
    "would other into has more her two like him see time could no make than first been its who now people my made "
    "over did down only way find use may water long little very after words called just where most know "
    "tokenizer token merge merges bytes pair pairs training text model models learning attention transformer "
    "naïve café résumé façade über straße déjà coöperate 東京 日本語 学习 数据 模型 😀 🚀 👍🏽 🇫🇷"
).split()


def make_text(seed: int, n_words: int) -> str:
    """A seeded text with Zipf-like word frequencies, punctuation, numbers and line breaks (stable across Pythons)."""
    rng = random.Random(seed)
    weights = [1.0 / (r + 1) for r in range(len(WORDS))]
    out: list[str] = []
    for _ in range(n_words):
        word = rng.choices(WORDS, weights)[0]
        if rng.random() < 0.08:
            word = word.capitalize()
        if rng.random() < 0.04:
            word = str(rng.randrange(0, 2000))
        out.append(word)
        r = rng.random()
        out.append(", " if r < 0.06 else ". " if r < 0.1 else "\n" if r < 0.12 else "'s " if r < 0.13 else " ")
    return "".join(out)


PIECES = (
    [chr(c) for c in range(32, 127)] * 3
    + list("éèêëàâäôöûüçñÉÀßøåæœ")
    + ["e\u0301", "a\u0308", "n\u0303", "o\u0302\u0323"]  # combining marks
    + list("日本語中文字汉字東京学习한국어かなカナ")
    + ["😀", "🚀", "👍🏽", "🇫🇷", "👩‍👩‍👧", "❤️", "𝔘", "𐍈"]  # emoji, modifiers, ZWJ, flags, astral
    + [" ", "  ", "    ", "\t", "\n", "\n\n", "\r\n", " \t ", "\u00a0", "\u3000", "\u2028"]  # whitespace runs
)


def random_strings(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 40))) for _ in range(n)]


def show_tokens(ids: Sequence[int], vocab: Callable[[int], bytes | None], limit: int = 12) -> str:
    parts = []
    for i in list(ids)[:limit]:
        b = vocab(i)
        parts.append(f"{i}={b!r}" if b is not None else str(i))
    more = ", ..." if len(ids) > limit else ""
    return "[" + ", ".join(parts) + more + "]"
