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

import json  # noqa: F401  (Task 8: to_json / from_json)
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
    # TODO(Task 1): the UTF-8 bytes of the text, as a list of ints (str.encode gives bytes; list() of bytes gives ints).
    raise NotImplementedError("Task 1: text_to_ids")


def build_vocab(merges: dict[tuple[int, int], int], special_tokens: dict[str, int]) -> dict[int, bytes]:
    """id -> the bytes it stands for: 0..255 are single bytes, a merge's id is its two parts' bytes joined,
    a special token's id is the UTF-8 of its string. Merges come in rank order, so parts exist first."""
    # TODO(Task 1): start from {i: bytes([i]) for i in range(256)}; for each merge in order,
    #   vocab[new_id] = vocab[left] + vocab[right]; then each special token's id -> token.encode("utf-8").
    raise NotImplementedError("Task 1: build_vocab")


# ----------------------------------------------------------------------------- Task 2: pair counts


def get_pair_counts(ids: Sequence[int], counts: dict[tuple[int, int], int] | None = None) -> dict[tuple[int, int], int]:
    """Count every adjacent pair: [1, 2, 1, 2] -> {(1, 2): 2, (2, 1): 1}; [7, 7, 7] -> {(7, 7): 2}.

    With ``counts`` given, add to it (and return it) instead of starting from an empty dict.
    """
    # TODO(Task 2): for each adjacent pair (ids[i], ids[i + 1]) add 1 to its count (zip(ids, ids[1:], strict=False) gives them).
    raise NotImplementedError("Task 2: get_pair_counts")


# ----------------------------------------------------------------------------- Task 3: one merge


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` by ``new_id``, scanning left to right.

    A replaced pair is consumed, so overlapping occurrences are not merged twice:
    merge([7, 7, 7], (7, 7), 300) -> [300, 7].
    """
    # TODO(Task 3): walk i from left to right; where (ids[i], ids[i + 1]) == pair, emit new_id and jump
    #   past both halves (i += 2); otherwise emit ids[i] (i += 1).
    raise NotImplementedError("Task 3: merge")


# ----------------------------------------------------------------------------- Task 4: pre-tokenization


def pretokenize(text: str) -> list[str]:
    """Split ``text`` into GPT-2's chunks; merges never cross a chunk boundary.

    "Hello world's 42!!" -> ["Hello", " world", "'s", " 42", "!!"]. The chunks joined give ``text`` back.
    """
    # TODO(Task 4): every match of GPT2_SPLIT_PATTERN, in order (regex.findall, or the compiled _SPLIT.findall).
    raise NotImplementedError("Task 4: pretokenize")


def split_on_special(text: str, special_tokens: Iterable[str]) -> list[str]:
    """Cut ``text`` around every occurrence of a special token; each occurrence is its own piece.

    split_on_special("a<|endoftext|>b", ["<|endoftext|>"]) -> ["a", "<|endoftext|>", "b"].
    Where two special tokens could match at the same place, the longer wins. No empty pieces.
    """
    # TODO(Task 4): no special tokens -> [text] (or [] for ""). Otherwise build the pattern
    #   "(" + "|".join(regex.escape(s) for s in tokens sorted longest first) + ")" (the group makes
    #   regex.split keep the matches), split, and drop the empty pieces.
    raise NotImplementedError("Task 4: split_on_special")


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
        # TODO(Task 5):
        #   1. validate vocab_size (ValueError when < 256 + the number of special tokens);
        #   2. cut the text with split_on_special, drop the special-token pieces, pretokenize the rest
        #      and count each distinct chunk (collections.Counter);
        #   3. repeat vocab_size - 256 - len(special_tokens) times: count the pairs inside every chunk
        #      (times the chunk's count), stop if there are none, pick the most frequent pair,
        #      ties to the smallest (left id, right id), record merges[pair] = 256 + len(merges),
        #      and merge it in every chunk;
        #   4. return cls(merges, {token: 256 + len(merges) + k for k, token in enumerate(special_tokens)}).
        raise NotImplementedError("Task 5: BPETokenizer.train")

    # ------------------------------------------------------------------------- Task 6: encode

    def _encode_chunk(self, chunk: str) -> list[int]:
        """One pre-tokenized chunk -> ids: merge the lowest-rank pair present until none is a merge."""
        # TODO(Task 6): start from text_to_ids(chunk); while there are >= 2 ids, find the adjacent pair with the
        #   lowest rank in self.merges (pairs that are not merges rank last); stop if it is not a merge,
        #   else merge it everywhere with its new id.
        raise NotImplementedError("Task 6: BPETokenizer._encode_chunk")

    def encode(self, text: str, allowed_special: str | set[str] = "none") -> list[int]:
        """text -> ids.

        Args:
            text: any string.
            allowed_special: "none" (default): special-token strings in ``text`` are ordinary text;
                "all": every special token is recognised and becomes its one id; a set: only those.
        Raises ValueError for any other ``allowed_special`` (or a set naming unknown tokens).
        """
        # TODO(Task 6): turn allowed_special into a set (ValueError for anything else); cut the text with
        #   split_on_special on that set; an allowed special token -> its one id; any other piece ->
        #   pretokenize it and extend the ids with each chunk's _encode_chunk.
        raise NotImplementedError("Task 6: BPETokenizer.encode")

    # ------------------------------------------------------------------------- Task 7: decode

    def decode(self, ids: Sequence[int]) -> str:
        """ids -> text. The ids' bytes are joined first, then decoded once; bytes that are not valid
        UTF-8 (a character cut between tokens, at the end) become U+FFFD. An unknown id raises ValueError."""
        # TODO(Task 7): join self.vocab[i] for every id (an unknown id: ValueError), then decode the bytes
        #   ONCE with .decode("utf-8", errors="replace").
        raise NotImplementedError("Task 7: BPETokenizer.decode")

    # ------------------------------------------------------------------------- Task 8: a readable file

    def to_json(self) -> str:
        """The tokenizer as readable JSON text: the merges in rank order (merge k makes id 256 + k), with
        the token each makes shown for people, and the special tokens. The same tokenizer always gives
        the same text."""
        # TODO(Task 8): a JSON object with at least the merges (in rank order) and the special tokens.
        #   Readable: one merge per line, with the bytes of the token it makes. json.dumps does the quoting.
        raise NotImplementedError("Task 8: BPETokenizer.to_json")

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        """The tokenizer that ``to_json`` wrote. Raises ValueError, saying what is wrong, for anything else."""
        # TODO(Task 8): json.loads, check the fields, rebuild the merges dict in order, return cls(merges, specials).
        raise NotImplementedError("Task 8: BPETokenizer.from_json")

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
