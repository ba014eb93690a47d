"""Stage 2.1 written from the lesson alone, the straightforward way.

correct: naive training (every chunk kept, every pair recounted each merge), encode by applying every merge in rank order, a hand-written special-token scan, JSON with [left, right, id] triples
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter  # noqa: F401  (Task 5: counting chunks)
from collections.abc import Iterable, Sequence
from pathlib import Path

import regex  # the `regex` package: the GPT-2 split needs \p{L} (any letter) and \p{N} (any number)

__all__ = [
    "ENDOFTEXT",
    "GPT2_SPLIT_PATTERN",
    "BPETokenizer",
    "build_vocab",
    "get_pair_counts",
    "merge",
    "pretokenize",
    "split_on_special",
    "text_to_ids",
]

#: The special token GPT-2 puts between documents.
ENDOFTEXT = "<|endoftext|>"

#: GPT-2's pre-tokenization pattern, verbatim from OpenAI's gpt-2 ``src/encoder.py``:
#: English contractions, an optional space + letters, an optional space + numbers, an optional
#: space + other symbols, whitespace that is not followed by a non-space, any other whitespace.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

_SPLIT = regex.compile(GPT2_SPLIT_PATTERN)
_FORMAT = "llmfs-bpe-tokenizer"


# ----------------------------------------------------------------------------- Task 1: bytes and ids


def text_to_ids(text: str) -> list[int]:
    """The UTF-8 bytes of ``text`` as ids 0..255: the 256 base tokens ("é" -> [195, 169])."""
    return [b for b in bytearray(text, 'utf-8')]


def build_vocab(merges: dict[tuple[int, int], int], special_tokens: dict[str, int]) -> dict[int, bytes]:
    """id -> the bytes it stands for: 0..255 are single bytes, a merge's id is its two parts' bytes joined,
    a special token's id is the UTF-8 of its string. Merges come in rank order, so parts exist first."""
    v = {}
    for i in range(256):
        v[i] = bytes([i])
    for pair in merges:
        v[merges[pair]] = v[pair[0]] + v[pair[1]]
    for t in special_tokens:
        v[special_tokens[t]] = bytes(t, 'utf-8')
    return v


# ----------------------------------------------------------------------------- Task 2: pair counts


def get_pair_counts(ids: Sequence[int], counts: dict[tuple[int, int], int] | None = None) -> dict[tuple[int, int], int]:
    """Count every adjacent pair: [1, 2, 1, 2] -> {(1, 2): 2, (2, 1): 1}; [7, 7, 7] -> {(7, 7): 2}.

    With ``counts`` given, add to it (and return it) instead of starting from an empty dict.
    """
    if counts is None:
        counts = {}
    for i in range(len(ids) - 1):
        counts[(ids[i], ids[i + 1])] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


# ----------------------------------------------------------------------------- Task 3: one merge


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` by ``new_id``, scanning left to right.

    A replaced pair is consumed, so overlapping occurrences are not merged twice:
    merge([7, 7, 7], (7, 7), 300) -> [300, 7].
    """
    out = []
    skip = False
    for i, x in enumerate(ids):
        if skip:
            skip = False
            continue
        if i + 1 < len(ids) and (x, ids[i + 1]) == tuple(pair):
            out.append(new_id)
            skip = True
        else:
            out.append(x)
    return out


# ----------------------------------------------------------------------------- Task 4: pre-tokenization


def pretokenize(text: str) -> list[str]:
    """Split ``text`` into GPT-2's chunks; merges never cross a chunk boundary.

    "Hello world's 42!!" -> ["Hello", " world", "'s", " 42", "!!"]. The chunks joined give ``text`` back.
    """
    return regex.findall(GPT2_SPLIT_PATTERN, text)


def split_on_special(text: str, special_tokens: Iterable[str]) -> list[str]:
    """Cut ``text`` around every occurrence of a special token; each occurrence is its own piece.

    split_on_special("a<|endoftext|>b", ["<|endoftext|>"]) -> ["a", "<|endoftext|>", "b"].
    Where two special tokens could match at the same place, the longer wins. No empty pieces.
    """
    toks = sorted(special_tokens, key=lambda t: -len(t))
    out, buf, i = [], "", 0
    while i < len(text):
        for t in toks:
            if text.startswith(t, i):
                if buf:
                    out.append(buf)
                out.append(t)
                buf = ""
                i += len(t)
                break
        else:
            buf += text[i]
            i += 1
    if buf:
        out.append(buf)
    return out


# ----------------------------------------------------------------------------- the tokenizer


class BPETokenizer:
    """A byte-level BPE tokenizer: 256 byte tokens, then one token per merge, then the special tokens.

    Attributes:
        merges: (left id, right id) -> new id, in rank order (the order they were learned).
        special_tokens: e.g. {"<|endoftext|>": 1023}; their ids come after all merges.
        vocab: id -> the bytes it stands for.
    """

    def __init__(
        self, merges: dict[tuple[int, int], int] | None = None, special_tokens: dict[str, int] | None = None
    ) -> None:
        self.merges: dict[tuple[int, int], int] = dict(merges or {})
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self.vocab: dict[int, bytes] = build_vocab(self.merges, self.special_tokens)

    @property
    def vocab_size(self) -> int:
        """256 byte tokens + one per merge + one per special token."""
        return 256 + len(self.merges) + len(self.special_tokens)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, special_tokens={list(self.special_tokens)})"

    # ------------------------------------------------------------------------- Task 5: train

    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: Sequence[str] = (ENDOFTEXT,)) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        Each step merges the most frequent adjacent pair, counted inside pre-tokenized chunks of the
        text with the special tokens cut out. **Ties go to the smallest pair** ``(left id, right id)``.
        Stops early when no pair is left. Raises ValueError when vocab_size < 256 + len(special_tokens).

        Recounting every pair before every merge is fine here (the checks use small texts); the lesson
        explains how the reference avoids the recount, an optional speed-up (`nox -s bench -- 2.1`).
        """
        specials = list(special_tokens)
        if vocab_size < 256 + len(specials):
            raise ValueError("vocab_size too small")
        words = []
        for piece in split_on_special(text, specials):
            if piece in specials:
                continue
            for chunk in pretokenize(piece):
                words.append(text_to_ids(chunk))
        merges = {}
        for k in range(vocab_size - 256 - len(specials)):
            counts = {}
            for w in words:
                get_pair_counts(w, counts)
            if not counts:
                break
            top = max(counts.values())
            best = min(p for p, c in counts.items() if c == top)
            merges[best] = 256 + k
            words = [merge(w, best, 256 + k) for w in words]
        return cls(merges, {t: 256 + len(merges) + i for i, t in enumerate(specials)})

    # ------------------------------------------------------------------------- Task 6: encode

    def _encode_chunk(self, chunk: str) -> list[int]:
        """One pre-tokenized chunk -> ids: merge the lowest-rank pair present until none is a merge."""
        ids = text_to_ids(chunk)
        for pair, new_id in self.merges.items():
            ids = merge(ids, pair, new_id)
        return ids

    def encode(self, text: str, allowed_special: str | set[str] = "none") -> list[int]:
        """text -> ids.

        Args:
            text: any string.
            allowed_special: "none" (default): special-token strings in ``text`` are ordinary text;
                "all": every special token is recognised and becomes its one id; a set: only those.
        Raises ValueError for any other ``allowed_special`` (or a set naming unknown tokens).
        """
        if allowed_special == "all":
            allowed = list(self.special_tokens)
        elif allowed_special == "none":
            allowed = []
        elif isinstance(allowed_special, set):
            allowed = list(allowed_special)
        else:
            raise ValueError("bad allowed_special")
        out = []
        for piece in split_on_special(text, allowed) if allowed else [text]:
            if piece in allowed:
                out.append(self.special_tokens[piece])
            else:
                for chunk in pretokenize(piece):
                    out += self._encode_chunk(chunk)
        return out

    # ------------------------------------------------------------------------- Task 7: decode

    def decode(self, ids: Sequence[int]) -> str:
        """ids -> text. The ids' bytes are joined first, then decoded once; bytes that are not valid
        UTF-8 (a character cut between tokens, at the end) become U+FFFD. An unknown id raises ValueError."""
        return bytes(b for i in ids for b in self.vocab[i]).decode("utf-8", "replace")

    # ------------------------------------------------------------------------- Task 8: a readable file

    def to_json(self) -> str:
        """The tokenizer as readable JSON text: the merges in rank order (merge k makes id 256 + k), with
        the token each makes shown for people, and the special tokens. The same tokenizer always gives
        the same text."""
        return json.dumps({"merges": [[a, b, i] for (a, b), i in self.merges.items()], "special": self.special_tokens}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        """The tokenizer that ``to_json`` wrote. Raises ValueError, saying what is wrong, for anything else."""
        d = json.loads(text)
        return cls({(a, b): i for a, b, i in d["merges"]}, d["special"])

    def save(self, path: str | Path) -> None:
        """Write ``to_json()`` to ``path`` atomically (a temporary file, then a rename)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(self.to_json())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """The tokenizer saved at ``path``."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
