"""Stage 2.1 — a byte-level BPE tokenizer (GPT-2 style): train, encode, decode, special tokens.

Your tasks (the lesson, README.md, walks through each one):
  Task 1  text_to_ids, build_vocab        text -> UTF-8 byte ids (0..255); the bytes behind every id
  Task 2  get_pair_counts                 how often each adjacent pair of ids occurs
  Task 3  merge                           replace every (left, right) pair by one new id
  Task 4  pretokenize, split_on_special   GPT-2's pre-split into chunks; cut text around special tokens
  Task 5  BPETokenizer.train              learn merges: the most frequent pair, ties to the smallest pair
  Task 6  BPETokenizer.encode             apply the merges by rank; special tokens only when allowed
  Task 7  BPETokenizer.decode             ids -> bytes -> text, invalid UTF-8 becomes U+FFFD
  Task 8  BPETokenizer.to_json, from_json a readable JSON file (save / load are given)

Grade your work with:  nox -s grade -- 2.1
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections import Counter
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
    return list(text.encode("utf-8"))


def build_vocab(merges: dict[tuple[int, int], int], special_tokens: dict[str, int]) -> dict[int, bytes]:
    """id -> the bytes it stands for: 0..255 are single bytes, a merge's id is its two parts' bytes joined,
    a special token's id is the UTF-8 of its string. Merges come in rank order, so parts exist first."""
    vocab = {i: bytes([i]) for i in range(256)}
    for (left, right), new_id in merges.items():
        vocab[new_id] = vocab[left] + vocab[right]
    for token, token_id in special_tokens.items():
        vocab[token_id] = token.encode("utf-8")
    return vocab


# ----------------------------------------------------------------------------- Task 2: pair counts


def get_pair_counts(ids: Sequence[int], counts: dict[tuple[int, int], int] | None = None) -> dict[tuple[int, int], int]:
    """Count every adjacent pair: [1, 2, 1, 2] -> {(1, 2): 2, (2, 1): 1}; [7, 7, 7] -> {(7, 7): 2}.

    With ``counts`` given, add to it (and return it) instead of starting from an empty dict.
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:], strict=False):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


# ----------------------------------------------------------------------------- Task 3: one merge


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` by ``new_id``, scanning left to right.

    A replaced pair is consumed, so overlapping occurrences are not merged twice:
    merge([7, 7, 7], (7, 7), 300) -> [300, 7].
    """
    out: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2  # skip both halves of the pair
        else:
            out.append(ids[i])
            i += 1
    return out


# ----------------------------------------------------------------------------- Task 4: pre-tokenization


def pretokenize(text: str) -> list[str]:
    """Split ``text`` into GPT-2's chunks; merges never cross a chunk boundary.

    "Hello world's 42!!" -> ["Hello", " world", "'s", " 42", "!!"]. The chunks joined give ``text`` back.
    """
    return _SPLIT.findall(text)


def split_on_special(text: str, special_tokens: Iterable[str]) -> list[str]:
    """Cut ``text`` around every occurrence of a special token; each occurrence is its own piece.

    split_on_special("a<|endoftext|>b", ["<|endoftext|>"]) -> ["a", "<|endoftext|>", "b"].
    Where two special tokens could match at the same place, the longer wins. No empty pieces.
    """
    specials = sorted(set(special_tokens), key=len, reverse=True)
    if not specials:
        return [text] if text else []
    pattern = "(" + "|".join(regex.escape(s) for s in specials) + ")"  # a group: split() keeps the matches
    return [piece for piece in regex.split(pattern, text) if piece]


# ----------------------------------------------------------------------------- the tokenizer


def _priority(pair: tuple[int, int], count: int) -> tuple[int, tuple[int, int]]:
    """Training's order (smallest first): the most frequent pair; ties to the smallest (left id, right id)."""
    return (-count, pair)


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

        This reference counts each distinct chunk once (times its frequency) and updates the pair
        counts incrementally after each merge, instead of recounting the whole text.
        """
        specials = list(dict.fromkeys(special_tokens))  # unique, in the order given
        if any(not isinstance(s, str) or not s for s in specials):
            raise ValueError(f"special tokens must be non-empty strings, got {specials!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256 + len(specials):
            raise ValueError(
                f"vocab_size must be an int >= 256 + {len(specials)} (the bytes and the special tokens), got {vocab_size!r}"
            )
        n_merges = vocab_size - 256 - len(specials)

        # Distinct chunks and how often each occurs; special tokens are cut out, never trained on.
        chunk_counts: Counter[str] = Counter()
        for piece in split_on_special(text, specials):
            if piece not in specials:
                chunk_counts.update(pretokenize(piece))
        words = [text_to_ids(chunk) for chunk in chunk_counts]
        freqs = list(chunk_counts.values())

        # Pair counts over all chunks, and which chunks hold each pair.
        counts: dict[tuple[int, int], int] = {}
        where: dict[tuple[int, int], set[int]] = {}
        for w, word in enumerate(words):
            for pair, n in get_pair_counts(word).items():
                counts[pair] = counts.get(pair, 0) + n * freqs[w]
                where.setdefault(pair, set()).add(w)
        # A heap of (priority, count, pair): its top is the next merge. An entry goes stale when its
        # pair's count changes; a fresh entry is pushed then, and stale ones are skipped when popped.
        heap = [(_priority(pair, n), n, pair) for pair, n in counts.items()]
        heapq.heapify(heap)

        merges: dict[tuple[int, int], int] = {}
        while len(merges) < n_merges and heap:
            _, n, best = heapq.heappop(heap)
            if counts.get(best) != n:
                continue  # stale
            new_id = 256 + len(merges)
            merges[best] = new_id
            changed: set[tuple[int, int]] = set()
            for w in where.pop(best):
                old = words[w]
                new = merge(old, best, new_id)
                if len(new) == len(old):
                    continue  # an earlier merge already took this chunk's occurrences
                for pair, n in get_pair_counts(old).items():
                    counts[pair] -= n * freqs[w]
                    changed.add(pair)
                for pair, n in get_pair_counts(new).items():
                    counts[pair] = counts.get(pair, 0) + n * freqs[w]
                    where.setdefault(pair, set()).add(w)
                    changed.add(pair)
                words[w] = new
            for pair in changed:
                if counts[pair] > 0:
                    heapq.heappush(heap, (_priority(pair, counts[pair]), counts[pair], pair))
                else:
                    del counts[pair]

        first_special = 256 + len(merges)
        return cls(merges, {s: first_special + k for k, s in enumerate(specials)})

    # ------------------------------------------------------------------------- Task 6: encode

    def _encode_chunk(self, chunk: str) -> list[int]:
        """One pre-tokenized chunk -> ids: merge the lowest-rank pair present until none is a merge."""
        ids = text_to_ids(chunk)
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:], strict=False), key=lambda p: self.merges.get(p, float("inf")))
            if pair not in self.merges:
                break
            ids = merge(ids, pair, self.merges[pair])
        return ids

    def encode(self, text: str, allowed_special: str | set[str] = "none") -> list[int]:
        """text -> ids.

        Args:
            text: any string.
            allowed_special: "none" (default): special-token strings in ``text`` are ordinary text;
                "all": every special token is recognised and becomes its one id; a set: only those.
        Raises ValueError for any other ``allowed_special`` (or a set naming unknown tokens).
        """
        if allowed_special == "none":
            allowed: set[str] = set()
        elif allowed_special == "all":
            allowed = set(self.special_tokens)
        elif isinstance(allowed_special, (set, frozenset)):
            unknown = set(allowed_special) - set(self.special_tokens)
            if unknown:
                raise ValueError(f"allowed_special names unknown special tokens {sorted(unknown)}; known: {list(self.special_tokens)}")
            allowed = set(allowed_special)
        else:
            raise ValueError(f'allowed_special must be "none", "all" or a set of special tokens, got {allowed_special!r}')

        cache: dict[str, list[int]] = self.__dict__.setdefault("_chunk_cache", {})
        ids: list[int] = []
        for piece in split_on_special(text, allowed):
            if piece in allowed:
                ids.append(self.special_tokens[piece])
                continue
            for chunk in pretokenize(piece):
                if chunk not in cache:
                    cache[chunk] = self._encode_chunk(chunk)
                ids.extend(cache[chunk])
        return ids

    # ------------------------------------------------------------------------- Task 7: decode

    def decode(self, ids: Sequence[int]) -> str:
        """ids -> text. The ids' bytes are joined first, then decoded once; bytes that are not valid
        UTF-8 (a character cut between tokens, at the end) become U+FFFD. An unknown id raises ValueError."""
        try:
            data = b"".join(self.vocab[int(i)] for i in ids)
        except KeyError as exc:
            raise ValueError(f"id {exc.args[0]} is not in the vocabulary (ids run from 0 to {self.vocab_size - 1})") from None
        return data.decode("utf-8", errors="replace")

    # ------------------------------------------------------------------------- Task 8: a readable file

    def to_json(self) -> str:
        """The tokenizer as readable JSON text: the merges in rank order (merge k makes id 256 + k), with
        the token each makes shown for people, and the special tokens. The same tokenizer always gives
        the same text."""
        lines = [
            "{",
            f'  "format": {json.dumps(_FORMAT)},',
            '  "version": 1,',
            f'  "pattern": {json.dumps(GPT2_SPLIT_PATTERN)},',
            f'  "special_tokens": {json.dumps(self.special_tokens, ensure_ascii=False)},',
            '  "merges": [',
        ]
        items = sorted(self.merges.items(), key=lambda kv: kv[1])
        for k, ((a, b), new_id) in enumerate(items):
            shown = self.vocab[new_id].decode("utf-8", errors="backslashreplace")
            comma = "," if k + 1 < len(items) else ""
            lines.append(f"    [{a}, {b}, {json.dumps(shown, ensure_ascii=False)}]{comma}")
        lines += ["  ]", "}"]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        """The tokenizer that ``to_json`` wrote. Raises ValueError, saying what is wrong, for anything else."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a tokenizer file: invalid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f'not a tokenizer file: expected a JSON object with "format": "{_FORMAT}"')
        raw_merges, specials = data.get("merges"), data.get("special_tokens")
        if not isinstance(raw_merges, list) or not isinstance(specials, dict):
            raise ValueError('tokenizer file: "merges" must be a list and "special_tokens" an object')
        merges: dict[tuple[int, int], int] = {}
        for k, entry in enumerate(raw_merges):
            new_id = 256 + k
            ok = isinstance(entry, list) and len(entry) >= 2 and all(type(x) is int for x in entry[:2])
            if not ok or not all(0 <= x < new_id for x in entry[:2]):
                raise ValueError(f"tokenizer file: merge {k} is {entry!r}; expected [left id, right id] with ids below {new_id}")
            merges[(entry[0], entry[1])] = new_id
        first = 256 + len(merges)
        if sorted(specials.values()) != list(range(first, first + len(specials))) or not all(specials):
            raise ValueError(f"tokenizer file: special token ids must run from {first} up, one per token, got {specials}")
        return cls(merges, specials)

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
