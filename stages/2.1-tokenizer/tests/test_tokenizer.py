"""Graded checks for stage 2.1 — a byte-level BPE tokenizer.

Reference semantics (see ``_reference.py``, written independently of the solution):
UTF-8 and U+FFFD come from Python's ``str.encode`` / ``bytes.decode(errors="replace")``;
the pre-split is GPT-2's pattern from OpenAI's gpt-2 ``src/encoder.py`` compiled with ``regex``;
encoding is GPT-2's ``Encoder.bpe`` (lowest-rank pair first); training is the naive BPE of
Sennrich et al. (2016) on bytes, recounting every pair before each merge, with the lesson's
tie rule (the most frequent pair; ties to the smallest pair of ids).

Every check uses small texts, so that a correct but naive ``train`` passes quickly too.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from shared.hints import encode as hint_lines
from shared.testing import check, check_close, covers, declare_parts, depends_on, expect_raises, fail, part_of


def _load_reference() -> ModuleType:
    name = "llmfs_2_1_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_reference.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


R = _load_reference()
EOT = R.ENDOFTEXT

#: The lesson's worked example (the Hugging Face course's BPE corpus, as one line of text).
WORKED_TEXT = "hug pug pun bun hugs"
WORKED_VOCAB = 256 + 8 + 1  # 8 merges and <|endoftext|>
WORKED_MERGES = [(117, 103), (32, 112), (104, 256), (117, 110), (32, 98), (32, 258), (257, 256), (257, 259)]
WORKED_PROBE = "hugs bun pug"
WORKED_IDS = [258, 115, 260, 259, 262]

#: Hand-made merges on which every named encoding mistake gives a different answer.
#: Some cross GPT-2's chunk boundaries ("e " then "he"+"e "), as if trained without the pre-split.
HAND_MERGES_BYTES = [(b"b", b"c"), (b"a", b"b"), (b"ab", b"c"), (b"c", b"d"), (b"e", b" "), (b"h", b"e"),
                     (b"he", b"e "), (b" ", b"a"), (b"d", b"a"), (b"a", b"a"), (b"aa", b"a")]  # fmt: skip
HAND_PROBES = ["abc", "abcd", "bcda", "he end", "she e ", "aaaa", "aaa", " abc", "cdab"]


def _ids_of(pairs: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
    ids = {bytes([i]): i for i in range(256)}
    out = []
    for k, (a, b) in enumerate(pairs):
        out.append((ids[a], ids[b]))
        ids[a + b] = 256 + k
    return out


HAND_MERGES = _ids_of(HAND_MERGES_BYTES)

# The part of the learner's code each named mistake lives in: a passing check that covers the part rules it out.
declare_parts({
    "ord() of each character": "text_to_ids", "UTF-16 instead of UTF-8": "text_to_ids",
    "overlapping pairs counted once": "get_pair_counts", "each distinct pair counted once": "get_pair_counts",
    "a merge that does not skip past a replaced pair": "merge", "merged from the right": "merge", "only the first occurrence merged": "merge",
    "split on whitespace (str.split)": "pretokenize", "the whole text returned as one chunk": "pretokenize",
    "the special tokens dropped from the pieces": "split_on_special", "special tokens not escaped": "split_on_special",
    "the shorter special token matched first": "split_on_special",
    "ties broken differently": "train's tie rule", "pre-split ignored: trained": "train's pre-split",
    "special tokens left in the training text": "train's special tokens",
    "merges applied in the wrong order": "encode's merge order", "greedy longest match": "encode's merge order",
    "pre-split ignored: merges applied": "encode's pre-split",
    "special token split into ordinary tokens": "encode's special tokens", "special token produced from ordinary text": "encode's special tokens",
    "decode that crashes on a split multi-byte character": "decode", "each token decoded on its own": "decode",
})  # fmt: skip


# ----------------------------------------------------------------------------- helpers


def _bytes_of(merges: Sequence[tuple[int, int]]) -> list[bytes]:
    v = R.build_vocab(merges)
    return [v[256 + k] for k in range(len(merges))]


def _tok_from(impl: Any, merges: Sequence[tuple[int, int]], specials: dict[str, int] | None = None) -> Any:
    """A learner tokenizer built from given merges (the constructor is given code)."""
    return impl.BPETokenizer({p: 256 + k for k, p in enumerate(merges)}, specials or {})


def _merge_list(tok: Any, what: str) -> list[tuple[int, int]]:
    merges = getattr(tok, "merges", None)
    check(isinstance(merges, dict), f"{what}: .merges should be a dict (left id, right id) -> new id, got {type(merges).__name__}")
    items = list(merges.items())
    for k, (pair, new_id) in enumerate(items):
        ok = isinstance(pair, tuple) and len(pair) == 2 and new_id == 256 + k
        check(ok, f"{what}: merge {k} is {pair!r} -> {new_id!r}; expected (left id, right id) -> {256 + k}, in rank order")
    return [(int(a), int(b)) for (a, b), _ in items]


def _first_diff(a: Sequence[Any], b: Sequence[Any]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _match(got: Any, mistakes: Mapping[str, Any | Callable[[], Any]]) -> str | None:
    for name, value in mistakes.items():
        try:
            out = value() if callable(value) else value
        except Exception:  # a mistake that cannot be computed here is not a match
            continue
        if out == got:
            return name
    return None


def _likely(name: str | None) -> str:
    """The "Likely mistake" line (and its data line, which the report reconciles across checks)."""
    return "" if name is None else hint_lines([(name, part_of(name))])


def check_merges(got: list[tuple[int, int]], expected: list[tuple[int, int]], *, what: str,
                 mistakes: Mapping[str, Any] | None = None, upstream: str = "") -> None:  # fmt: skip
    """Merges equal, or a message showing where they part, as bytes."""
    if got == expected:
        return
    i = _first_diff(got, expected)
    gb, eb = _bytes_of(got), _bytes_of(expected)
    lines = [f"{what}: the merges differ (reference: naive BPE, Sennrich et al. 2016, ties to the smallest pair)",
             f"  expected {len(expected)} merges: {eb[:10]}{' ...' if len(eb) > 10 else ''}",
             f"  got      {len(got)} merges: {gb[:10]}{' ...' if len(gb) > 10 else ''}"]  # fmt: skip
    if i < min(len(got), len(expected)):
        lines.append(f"  first difference at merge {i}: expected {expected[i]} = {eb[i]!r}, got {got[i]} = {gb[i]!r}")
    else:
        lines.append(f"  the first {i} merges agree; then one list stops")
    if upstream:
        fail("\n".join(lines) + f"\n  {upstream}")
    fail("\n".join(lines) + _likely(_match(got, mistakes or {})))


def check_ids(got: Any, expected: list[int], *, what: str, vocab: Callable[[int], bytes | None],
              mistakes: Mapping[str, Any] | None = None, upstream: str = "") -> None:  # fmt: skip
    """Token ids equal, or expected vs got with the tokens as bytes around the first difference."""
    check(isinstance(got, list), f"{what}: expected a list of ints, got {type(got).__name__}")
    check(all(type(i) is int for i in got), f"{what}: expected Python ints, got {sorted({type(i).__name__ for i in got})}")
    if got == expected:
        return
    i = _first_diff(got, expected)
    lo = max(0, i - 3)
    msg = (f"{what}: the ids differ from position {i} on\n"
           f"  expected {len(expected)} ids: ...{R.show_tokens(expected[lo:], vocab, 8)}\n"
           f"  got      {len(got)} ids: ...{R.show_tokens(got[lo:], vocab, 8)}")  # fmt: skip
    if upstream:
        fail(msg + f"\n  {upstream}")
    fail(msg + _likely(_match(got, mistakes or {})))


def _vocab_lookup(merges: Sequence[tuple[int, int]], specials: dict[str, int] | None = None) -> Callable[[int], bytes | None]:
    v = R.build_vocab(merges, specials)
    return v.get


# Which building blocks (Tasks 1-4) are wrong: later checks say so instead of naming a mistake twice.
_PARTS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "text_to_ids": ("Task 1", lambda m: list(m.text_to_ids("aé日😀")) == list("aé日😀".encode())),
    "build_vocab": ("Task 1", lambda m: m.build_vocab({(104, 105): 256, (256, 256): 257}, {EOT: 258})
                    == R.build_vocab([(104, 105), (256, 256)], {EOT: 258})),
    "get_pair_counts": ("Task 2", lambda m: dict(m.get_pair_counts([7, 7, 7, 1, 7])) == {(7, 7): 2, (7, 1): 1, (1, 7): 1}),
    "merge": ("Task 3", lambda m: list(m.merge([7, 7, 7, 1, 7, 7], (7, 7), 300)) == [300, 7, 1, 300]),
    "pretokenize": ("Task 4", lambda m: list(m.pretokenize(" he's  42!! x\n")) == R.pretokenize(" he's  42!! x\n")),
    "split_on_special": ("Task 4", lambda m: list(m.split_on_special(f"a{EOT}{EOT}b", [EOT])) == ["a", EOT, EOT, "b"]),
}


def upstream_note(impl: Any, parts: Sequence[str], what: str) -> str:
    """'train builds on merge (Task 3), which fails its own check: fix that first.' or ''."""
    broken = []
    for name in parts:
        task, probe = _PARTS[name]
        try:
            ok = probe(impl)
        except NotImplementedError:
            continue  # not written yet: the learner's code here does not use it
        except Exception:
            ok = False
        if not ok:
            broken.append(f"{name} ({task})")
    if not broken:
        return ""
    its = "its own check" if len(broken) == 1 else "their own checks"
    return f"Note: {what} is built on {', '.join(broken)}, which fail{'s' if len(broken) == 1 else ''} {its}: fix that first."


def _train(impl: Any, text: str, vocab_size: int, specials: Sequence[str] = (EOT,)) -> Any:
    tok = impl.BPETokenizer.train(text, vocab_size, special_tokens=specials)
    check(isinstance(tok, impl.BPETokenizer), f"BPETokenizer.train must return a BPETokenizer, got {type(tok).__name__}")
    return tok


def _train_mistakes(text: str, n: int, specials: Sequence[str] = (EOT,)) -> dict[str, Callable[[], list[tuple[int, int]]]]:
    out: dict[str, Callable[[], list[tuple[int, int]]]] = {}
    for tie, name in R.TIES.items():
        out[f"ties broken differently: {name}"] = lambda tie=tie: R.train(text, n, specials, tie=tie)
    out["pre-split ignored: trained on the whole text, so merges cross word and space boundaries"] = (
        lambda: R.train(text, n, specials, presplit=False)
    )
    out["special tokens left in the training text (cut them out with split_on_special first)"] = (
        lambda: R.train(text, n, specials, cut_specials=False)
    )
    return out


# ----------------------------------------------------------------------------- Task 1: bytes and ids


@covers("text_to_ids")
def test_text_to_ids_gives_utf8_bytes(impl) -> None:
    """text_to_ids gives the UTF-8 bytes of the text (ids 0..255)

    Text_to_ids gives the UTF-8 bytes of the text as ids 0..255."""
    for text in ["hello", "é", "naïve café", "日本語", "😀 👍🏽", "", "a\u0301\n\t"]:
        got = impl.text_to_ids(text)
        check(isinstance(got, list), f"text_to_ids({text!r}) should return a list of ints, got {type(got).__name__}")
        expected = list(text.encode("utf-8"))
        if got != expected:
            hint = ""
            if got == [ord(c) for c in text]:
                hint = _likely("ord() of each character instead of its UTF-8 bytes (text.encode('utf-8'))")
            elif got == list(text.encode("utf-16-le")):
                hint = _likely("UTF-16 instead of UTF-8")
            fail(f"text_to_ids({text!r}): expected the UTF-8 bytes {expected}, got {got[:16]}" + hint)


@covers("build_vocab")
def test_build_vocab_joins_the_bytes_of_each_merge(impl) -> None:
    """build_vocab: single bytes, each merge's parts joined, special tokens as UTF-8

    Build_vocab: ids 0..255 are single bytes, a merge's id stands for its two parts' bytes joined, a special token for its UTF-8."""
    merges = {(104, 105): 256, (256, 33): 257, (257, 257): 258}
    specials = {EOT: 259, "<|pad|>": 260}
    got = impl.build_vocab(merges, specials)
    check(isinstance(got, dict), f"build_vocab should return a dict id -> bytes, got {type(got).__name__}")
    check(len(got) == 261, f"build_vocab: expected 261 entries (256 bytes + 3 merges + 2 special tokens), got {len(got)}")
    for i in (0, 65, 200, 255):
        check(got.get(i) == bytes([i]), f"build_vocab: id {i} should be the single byte {bytes([i])!r}, got {got.get(i)!r}")
    expected = {256: b"hi", 257: b"hi!", 258: b"hi!hi!", 259: EOT.encode(), 260: b"<|pad|>"}
    for i, b in expected.items():
        check(got.get(i) == b, f"build_vocab: id {i} should stand for {b!r}, got {got.get(i)!r} (merges {merges}, specials {specials})")


# ----------------------------------------------------------------------------- Task 2: pair counts


@covers("get_pair_counts")
def test_pair_counts_count_every_adjacent_pair(impl) -> None:
    """get_pair_counts counts every adjacent pair, overlapping ones too

    Get_pair_counts counts every adjacent pair, overlapping ones too ([7, 7, 7] has (7, 7) twice), and adds to counts= when given."""
    ids = [1, 2, 1, 2, 7, 7, 7]
    got = impl.get_pair_counts(ids)
    expected = {(1, 2): 2, (2, 1): 1, (2, 7): 1, (7, 7): 2}
    if dict(got) != expected:
        hint = _likely(_match(dict(got), {
            "overlapping pairs counted once ([7, 7, 7] holds the pair (7, 7) at positions 0 and 1)": {**expected, (7, 7): 1},
            "each distinct pair counted once (counted over a set of pairs): count every position": {p: 1 for p in expected},
        }))  # fmt: skip
        fail(f"get_pair_counts({ids}): expected {expected}, got {dict(got)}" + hint)
    check(dict(impl.get_pair_counts([5])) == {} and dict(impl.get_pair_counts([])) == {},
          "get_pair_counts of a list with fewer than 2 ids should be {} (no pairs)")  # fmt: skip
    acc = {(1, 2): 10}
    out = impl.get_pair_counts([1, 2, 3], acc)
    check(out is acc and acc == {(1, 2): 11, (2, 3): 1},
          f"get_pair_counts([1, 2, 3], counts={{(1, 2): 10}}) should add to counts and return it: expected {{(1, 2): 11, (2, 3): 1}}, "
          f"got {dict(out)}{'' if out is acc else ' (a new dict, not counts)'}")  # fmt: skip


# ----------------------------------------------------------------------------- Task 3: one merge


@covers("merge")
@pytest.mark.points(2)
def test_merge_replaces_each_pair_left_to_right(impl) -> None:
    """merge replaces each pair left to right: [7, 7, 7] -> [X, 7]

    Merge replaces every occurrence of the pair, left to right; [7, 7, 7] -> [X, 7] (a replaced pair is consumed)."""
    cases = [([1, 2, 3, 1, 2], (1, 2), 9), ([7, 7, 7], (7, 7), 300), ([7, 7, 7, 7], (7, 7), 300),
             ([7, 7, 7, 1, 7, 7], (7, 7), 300), ([1, 2], (2, 1), 9), ([], (1, 2), 9), ([1], (1, 2), 9), ([2, 1, 2, 1], (1, 2), 9)]  # fmt: skip
    got = [list(impl.merge(list(ids), pair, new)) for ids, pair, new in cases]
    expected = [R.merge(ids, pair, new) for ids, pair, new in cases]
    if got == expected:
        return
    k = _first_diff(got, expected)
    ids, pair, new = cases[k]
    mistakes = {
        "a merge that does not skip past a replaced pair (overlapping pairs merged twice: i += 2 after a match)": [
            R.merge(i, p, n, mistake="no skip") for i, p, n in cases],
        "merged from the right ([7, 7, 7] -> [7, X]) instead of left to right": [R.merge(i, p, n, mistake="from the right") for i, p, n in cases],
        "only the first occurrence merged": [R.merge(i, p, n, mistake="first only") for i, p, n in cases],
    }  # fmt: skip
    fail(f"merge({ids}, {pair}, {new}): expected {expected[k]}, got {got[k]}" + _likely(_match(got, mistakes)))


# ----------------------------------------------------------------------------- Task 4: pre-tokenization


PRETOKENIZE_PROBES = [
    "Hello world's 42!!",
    "  two  spaces,\ttab\nnew line\n\n",
    "I'll say: it's 2024 (or 1999)...",
    "naïve café, 東京 und Straße ²³ 😀😀!",
    "x=1;y=2  ",
    "don't DON'T we've they're",
]


@covers("pretokenize")
def test_pretokenize_matches_gpt2(impl) -> None:
    """pretokenize splits text into GPT-2's chunks

    Pretokenize splits text into GPT-2's chunks (its regex from OpenAI's encoder.py), which join back to the text."""
    for text in PRETOKENIZE_PROBES:
        got = impl.pretokenize(text)
        check(isinstance(got, list), f"pretokenize should return a list of str, got {type(got).__name__}")
        expected = R.pretokenize(text)
        if got != expected:
            mistakes = {
                "split on whitespace (str.split) instead of GPT-2's pattern: spaces must stay, at the start of the next chunk": text.split(),
                "the whole text returned as one chunk": [text],
            }
            joined = "" if "".join(map(str, got)) == text else "\n  (your chunks do not even join back to the text)"
            fail(f"pretokenize({text!r}) (reference: GPT-2's pattern, compiled with `regex`)\n  expected {expected}\n"
                 f"  got      {got}{joined}" + _likely(_match(got, mistakes)))  # fmt: skip


@covers("split_on_special")
def test_split_on_special_keeps_each_special_token_whole(impl) -> None:
    """split_on_special keeps each special token whole, longest first

    Split_on_special cuts text around special tokens, each occurrence one piece (longest first), no empty pieces."""
    specials = [EOT, "<|pad|>", "<|pad|><|pad|>"]
    cases = [f"a{EOT}b", f"{EOT}{EOT}x", "no special here", f"x<|pad|><|pad|><|pad|>y{EOT}", "", "<|endoftext", f"a|b<{EOT}>"]
    for text in cases:
        got = impl.split_on_special(text, specials)
        expected = R.split_on_special(text, specials)
        if list(got) != expected:
            import re

            unescaped = "|".join(sorted(specials, key=len, reverse=True))
            mistakes = {
                "the special tokens dropped from the pieces (split() without a group keeps no matches)": [p for p in expected if p not in specials],
                "special tokens not escaped in the pattern (use re.escape / regex.escape: '|' means 'or')": lambda text=text, unescaped=unescaped: [
                    p for p in re.split(f"({unescaped})", text) if p],
                "the shorter special token matched first (sort them longest first)": lambda text=text: R.split_on_special(text, specials[:2]),
            }  # fmt: skip
            fail(f"split_on_special({text!r}, {specials})\n  expected {expected}\n  got      {list(got)}" + _likely(_match(list(got), mistakes)))


# ----------------------------------------------------------------------------- Task 5: train


@depends_on("text_to_ids", "build_vocab", "get_pair_counts", "merge", "pretokenize", "split_on_special", "train's tie rule",
            "train's pre-split", "train's special tokens", "encode's merge order", "encode's pre-split")  # fmt: skip
@pytest.mark.points(2)
def test_train_reproduces_the_worked_example(impl) -> None:
    """train and encode reproduce the lesson's worked example exactly

    Train and encode reproduce the lesson's worked example exactly: its 8 merges in order, the special token's id, the encoding."""
    tok = _train(impl, WORKED_TEXT, WORKED_VOCAB)
    got = _merge_list(tok, f"train({WORKED_TEXT!r}, {WORKED_VOCAB})")
    note = upstream_note(impl, ["text_to_ids", "get_pair_counts", "merge", "pretokenize", "split_on_special"], "train")
    check_merges(got, WORKED_MERGES, what=f"BPETokenizer.train({WORKED_TEXT!r}, vocab_size={WORKED_VOCAB})",
                 mistakes=_train_mistakes(WORKED_TEXT, 8), upstream=note)  # fmt: skip
    check(tok.special_tokens == {EOT: 264}, f"after 8 merges the special token gets id 256 + 8 = 264; got special_tokens={tok.special_tokens}")
    check(tok.vocab_size == WORKED_VOCAB, f"vocab_size should be {WORKED_VOCAB}, got {tok.vocab_size}")
    note = upstream_note(impl, ["text_to_ids", "merge", "pretokenize", "split_on_special"], "encode")
    check_ids(tok.encode(WORKED_PROBE), WORKED_IDS, what=f"encode({WORKED_PROBE!r}) with the worked example's merges",
              vocab=_vocab_lookup(WORKED_MERGES), mistakes={k: (lambda f=f: f()[0]) for k, f in _encode_mistakes([WORKED_PROBE], WORKED_MERGES).items()},
              upstream=note)  # fmt: skip


@covers("train's tie rule")
@depends_on("text_to_ids", "build_vocab", "get_pair_counts", "merge", "pretokenize", "split_on_special")
@pytest.mark.points(2)
def test_train_breaks_ties_by_the_smallest_pair(impl) -> None:
    """train breaks ties by the smallest pair (left id, right id)

    Train breaks ties as the lesson says: among the most frequent pairs, the smallest (left id, right id)."""
    probes = [(WORKED_TEXT, 8), ("the cat sat on the mat. the cat ate the rat.", 10), ("abab cdcd abab cdcd", 6)]
    note = upstream_note(impl, ["text_to_ids", "get_pair_counts", "merge", "pretokenize", "split_on_special"], "train")
    got_all, exp_all = [], []
    for text, n in probes:
        got_all.append(_merge_list(_train(impl, text, 256 + n + 1), f"train({text!r})"))
        exp_all.append(R.train(text, n))
    if got_all == exp_all:
        return
    k = _first_diff(got_all, exp_all)
    text, n = probes[k]
    # Name a tie rule only when it explains every probe.
    mistakes = {name: (lambda tie=tie: [R.train(t, m, tie=tie) for t, m in probes]) for tie, name in R.TIES.items()}
    name = None if note else _match(got_all, mistakes)
    try:
        check_merges(got_all[k], exp_all[k], what=f"train({text!r}, vocab_size={256 + n + 1})", upstream=note)
    except AssertionError as exc:
        fail(str(exc) + _likely(name and f"ties broken differently: {name}"))


@depends_on("text_to_ids", "build_vocab", "get_pair_counts", "merge", "pretokenize", "split_on_special", "train's tie rule", "train's pre-split", "train's special tokens")
def test_train_matches_the_reference_on_mixed_text(impl) -> None:
    """train learns the reference's 60 merges on a mixed text

    Train learns the same 60 merges as the reference on a mixed text (accents, CJK, emoji, numbers, special tokens)."""
    text = R.make_text(3, 300) + EOT + R.make_text(4, 60) + EOT
    tok = _train(impl, text, 256 + 60 + 1)
    note = upstream_note(impl, ["text_to_ids", "get_pair_counts", "merge", "pretokenize", "split_on_special"], "train")
    check_merges(_merge_list(tok, "train"), R.train(text, 60), what="BPETokenizer.train(mixed text, vocab_size=317)",
                 mistakes=_train_mistakes(text, 60), upstream=note)  # fmt: skip


@covers("train's pre-split")
@depends_on("text_to_ids", "build_vocab", "get_pair_counts", "merge", "pretokenize", "split_on_special")
def test_train_never_merges_across_chunks(impl) -> None:
    """no learned merge crosses a pre-split chunk boundary

    No learned token crosses a pre-split boundary: merges stay inside GPT-2's chunks (a space starts a word)."""
    text = R.make_text(5, 200)
    tok = _train(impl, text, 256 + 40 + 1)
    merges = _merge_list(tok, "train")
    for k, token in enumerate(_bytes_of(merges)):
        s = token.decode("utf-8", errors="ignore")
        if s and len(R.pretokenize(s)) > 1:
            named = _match(merges, {"pre-split ignored: trained on the whole text, so merges cross word and space boundaries": (
                lambda: R.train(text, 40, presplit=False))})  # fmt: skip
            note = upstream_note(impl, ["pretokenize"], "train")
            fail(f"merge {k} makes the token {token!r}, which spans the chunks {R.pretokenize(s)}: train must count pairs only inside "
                 f"the chunks of pretokenize(text)" + (f"\n  {note}" if note else _likely(named)))  # fmt: skip


@covers("train's special tokens")
@depends_on("text_to_ids", "build_vocab", "get_pair_counts", "merge", "pretokenize", "split_on_special")
def test_train_leaves_special_tokens_out(impl) -> None:
    """special tokens are cut out of the training text

    Special tokens are cut out of the training text: no merge learns their pieces, and their ids come after the merges."""
    text = (f"one two{EOT}three{EOT}{EOT}four " * 6) + "<|pad|>" * 3
    tok = _train(impl, text, 256 + 20 + 2, specials=(EOT, "<|pad|>"))
    merges = _merge_list(tok, "train")
    bad = [t for t in _bytes_of(merges) if any(c in t for c in b"<|>")]
    if bad:
        named = _match(merges, {"special tokens left in the training text (cut them out with split_on_special first)": (
            lambda: R.train(text, 20, (EOT, "<|pad|>"), cut_specials=False))})  # fmt: skip
        note = upstream_note(impl, ["split_on_special"], "train")
        fail(f"train learned merges from inside the special tokens, e.g. {bad[:4]}: special tokens are never split, so they must be "
             "cut out of the text before counting pairs" + (f"\n  {note}" if note else _likely(named)))  # fmt: skip
    n = len(merges)
    expected = {EOT: 256 + n, "<|pad|>": 257 + n}
    check(tok.special_tokens == expected, f"special token ids come right after the {n} merges, in the order given: expected {expected}, got {tok.special_tokens}")
    check(tok.vocab.get(256 + n) == EOT.encode(), f"vocab[{256 + n}] should be the bytes of {EOT!r}, got {tok.vocab.get(256 + n)!r}")


@depends_on("text_to_ids", "build_vocab", "get_pair_counts", "merge", "pretokenize", "split_on_special")
def test_train_honours_vocab_size(impl) -> None:
    """train makes vocab_size - 256 - len(special_tokens) merges

    Train makes vocab_size - 256 - len(special_tokens) merges, stops early when no pair is left, and rejects a too-small vocab_size."""
    tok = _train(impl, R.make_text(6, 120), 300, specials=(EOT, "<|a|>"))
    check(len(tok.merges) == 42 and tok.vocab_size == 300,
          f"train(text, 300, two special tokens) should make 300 - 256 - 2 = 42 merges; got {len(tok.merges)} merges, vocab_size {tok.vocab_size}")  # fmt: skip
    check(len(tok.vocab) == 300, f"vocab should hold 300 ids, got {len(tok.vocab)}")
    tiny = _train(impl, "abab", 300)
    check(len(tiny.merges) == 2, f'train("abab", 300): "ab", then "abab", then no pair is left: expected 2 merges, got {len(tiny.merges)}')
    check(tiny.special_tokens == {EOT: 258}, f'train("abab", 300): the special token follows the 2 merges, id 258; got {tiny.special_tokens}')
    none = _train(impl, "", 257)
    check(len(none.merges) == 0 and none.special_tokens == {EOT: 256}, f'train("", 257) should make no merges and give {EOT} id 256')
    expect_raises(ValueError, impl.BPETokenizer.train, "abc", 256, what="BPETokenizer.train('abc', 256) (no room for the special token)")


@depends_on("text_to_ids", "build_vocab", "get_pair_counts", "merge", "pretokenize", "split_on_special")
def test_train_is_deterministic(impl) -> None:
    """training twice on the same text gives the same merges

    Training twice on the same text gives the same merges and the same encoding."""
    text = R.make_text(8, 150)
    a, b = _train(impl, text, 256 + 30 + 1), _train(impl, text, 256 + 30 + 1)
    check(list(a.merges.items()) == list(b.merges.items()), "two trainings on the same text gave different merges: "
          "is a tie decided by set or dict iteration order? Use the lesson's rule (the smallest pair)")  # fmt: skip
    check(a.encode(text) == b.encode(text), "two tokenizers with the same merges encode the same text differently")


# ----------------------------------------------------------------------------- Task 6: encode


def _encode_mistakes(text_list: Sequence[str], merges: Sequence[tuple[int, int]]) -> dict[str, Callable[[], list[list[int]]]]:
    return {name: (lambda v=v: [R.encode(t, merges, variant=v) for t in text_list]) for v, name in R.ENCODE_MISTAKES.items()}


@covers("encode's merge order", "encode's pre-split")
@depends_on("text_to_ids", "build_vocab", "merge", "pretokenize", "split_on_special")
@pytest.mark.points(2)
def test_encode_applies_merges_by_rank(impl) -> None:
    """encode applies the merges lowest rank first (GPT-2's bpe)

    Encode applies merges lowest rank first within each GPT-2 chunk (GPT-2's bpe()), on hand-made merges."""
    tok = _tok_from(impl, HAND_MERGES)
    got = [tok.encode(p) for p in HAND_PROBES]
    expected = [R.encode(p, HAND_MERGES) for p in HAND_PROBES]
    if got == expected:
        return
    k = _first_diff(got, expected)
    note = upstream_note(impl, ["text_to_ids", "merge", "pretokenize", "split_on_special"], "encode")
    name = None if note else _match(got, _encode_mistakes(HAND_PROBES, HAND_MERGES))
    shown = ", ".join(f"{a!r}+{b!r}" for a, b in HAND_MERGES_BYTES)
    check_ids(got[k], expected[k], what=f"encode({HAND_PROBES[k]!r}) with the merges [{shown}] (ranks 0, 1, 2, ...)",
              vocab=_vocab_lookup(HAND_MERGES), upstream=note or (f"Likely mistake: {name}." if name else ""))  # fmt: skip


@depends_on("text_to_ids", "build_vocab", "merge", "pretokenize", "split_on_special")
def test_encode_matches_gpt2_bpe_on_held_out_text(impl) -> None:
    """encode equals GPT-2's bpe() on a held-out text

    Encode equals GPT-2's bpe() with the same 80 trained merges on a held-out text."""
    merges = R.train(R.make_text(3, 300), 80)
    tok = _tok_from(impl, merges)
    held = R.make_text(12, 120)
    note = upstream_note(impl, ["text_to_ids", "merge", "pretokenize", "split_on_special"], "encode")
    check_ids(tok.encode(held), R.encode(held, merges), what="encode(held-out text)", vocab=_vocab_lookup(merges),
              mistakes={k: (lambda f=f: f()[0]) for k, f in _encode_mistakes([held], merges).items()}, upstream=note)  # fmt: skip


@covers("encode's special tokens")
@depends_on("text_to_ids", "build_vocab", "merge", "pretokenize", "split_on_special")
@pytest.mark.points(2)
def test_special_tokens_survive(impl) -> None:
    """special tokens: one id each when allowed, plain text otherwise

    Special tokens: one id each when allowed ("all" or a set), plain text with "none", and they decode back."""
    merges = R.train(R.make_text(3, 200), 30)
    specials = {EOT: 256 + 30, "<|pad|>": 257 + 30}
    tok = _tok_from(impl, merges, specials)
    vocab = _vocab_lookup(merges, specials)
    text = f"hello{EOT}world <|pad|>{EOT}{EOT}!"
    note = upstream_note(impl, ["split_on_special", "pretokenize"], "encode")
    expected = R.encode(text, merges, specials, allowed=list(specials))
    check_ids(tok.encode(text, allowed_special="all"), expected, what=f'encode({text!r}, allowed_special="all")', vocab=vocab,
              mistakes={"special token split into ordinary tokens: it was not recognised (split the text on special tokens before pretokenize)":
                        R.encode(text, merges, specials)}, upstream=note)  # fmt: skip
    check_ids(tok.encode(text, allowed_special={EOT}), R.encode(text, merges, specials, allowed=[EOT]),
              what=f"encode({text!r}, allowed_special={{{EOT!r}}}) (only that one is recognised)", vocab=vocab, upstream=note)
    plain = tok.encode(text)
    check_ids(plain, R.encode(text, merges, specials), what=f'encode({text!r}) (allowed_special="none": special strings are plain text)',
              vocab=vocab, mistakes={"special token produced from ordinary text (with allowed_special=\"none\" they are plain text)": expected},
              upstream=note)  # fmt: skip
    ids = tok.encode(text, allowed_special="all")
    check(tok.decode(ids) == text, f"decode(encode(text, allowed_special='all')) should give the text back, got {tok.decode(ids)!r}")
    expect_raises(ValueError, tok.encode, "x", allowed_special="everything", what='encode("x", allowed_special="everything")')


# ----------------------------------------------------------------------------- Task 7: decode


@covers("decode")
@depends_on("build_vocab")
@pytest.mark.points(2)
def test_decode_turns_invalid_utf8_into_replacement_chars(impl) -> None:
    """decode joins the bytes first; invalid UTF-8 becomes U+FFFD

    Decode joins the tokens' bytes, then decodes once: a character split across tokens is whole, a lone piece becomes U+FFFD."""
    euro = list("€".encode())  # [226, 130, 172]
    merges = [(euro[0], euro[1]), (ord("a"), euro[0])]  # 256 = b"\xe2\x82" (two thirds of "€"), 257 = b"a\xe2"
    tok = _tok_from(impl, merges, {EOT: 258})
    cases = [[256, euro[2]], [ord("x"), 257, euro[1], euro[2]], [256], [euro[0]], [euro[2], ord("b")], [257], [ord("h"), ord("i")], [], [258, 256]]
    vocab = R.build_vocab(merges, {EOT: 258})
    for ids in cases:
        expected = b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
        try:
            got = tok.decode(ids)
        except UnicodeDecodeError as exc:
            fail(f"decode({ids}) raised UnicodeDecodeError ({exc}).\n  Likely mistake: decode that crashes on a split multi-byte character: "
                 "a token can hold part of a character; decode the joined bytes with errors=\"replace\" (invalid bytes become U+FFFD)")  # fmt: skip
        if got != expected:
            per_token = "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)
            hint = _likely("each token decoded on its own: join all the bytes first, then decode once") if got == per_token else ""
            fail(f"decode({ids}) (tokens {[vocab[i] for i in ids]}): expected {expected!r} "
                 f"(bytes.decode('utf-8', errors='replace')), got {got!r}" + hint)  # fmt: skip
    expect_raises((ValueError, KeyError, IndexError), tok.decode, [259], what="decode([259]) (no such id)")


@depends_on("text_to_ids", "build_vocab", "merge", "pretokenize", "split_on_special", "decode", "encode's special tokens")
@pytest.mark.points(2)
def test_round_trip_on_random_strings(impl) -> None:
    """decode(encode(s)) == s for 300 seeded random strings

    Decode(encode(s)) == s for 300 seeded random strings (ASCII, accents, combining marks, CJK, emoji, whitespace runs)."""
    merges = R.train(R.make_text(3, 300) + "".join(R.random_strings(99, 40)), 80)
    tok = _tok_from(impl, merges, {EOT: 256 + 80})
    note = upstream_note(impl, ["text_to_ids", "merge", "pretokenize", "split_on_special"], "encode")
    for s in R.random_strings(2024, 300) + [f"a{EOT}b", "  \n\n  ", "e\u0301\u0301"]:
        ids = tok.encode(s, allowed_special="all")
        back = tok.decode(ids)
        if back != s:
            i = _first_diff(back, s)
            fail(f"decode(encode(s)) != s for s = {s!r}\n  ids {ids[:16]}\n  got back {back!r} (first difference at character {i})"
                 + (f"\n  {note}" if note else ""))  # fmt: skip


@depends_on("text_to_ids", "build_vocab", "get_pair_counts", "merge", "pretokenize", "split_on_special", "train's pre-split", "encode's merge order")
def test_compression_on_held_out_text(impl) -> None:
    """120 merges compress a held-out text to >= 1.9 bytes per token

    On a held-out text, 120 merges give at least 1.9 bytes per token (the reference: 2.10; bytes alone: 1.0)."""
    tok = _train(impl, R.make_text(21, 500), 256 + 120 + 1)
    held = R.make_text(22, 300)
    ids = tok.encode(held)
    check(tok.decode(ids) == held, "decode(encode(held-out text)) does not give the text back")
    ratio = len(held.encode("utf-8")) / max(1, len(ids))
    check(ratio >= 1.9, f"bytes per token on the held-out text: {ratio:.3f}, expected at least 1.9 (the reference gets 2.10 with the same "
          f"120 merges; {len(tok.merges)} merges were learned)")  # fmt: skip


# ----------------------------------------------------------------------------- Task 8: a readable file


@depends_on("build_vocab")
@pytest.mark.points(2)
def test_save_and_load_give_the_same_tokenizer(impl, tmp_path: Path) -> None:
    """save and load give back the same tokenizer, and the same file

    Save writes readable JSON; load gives back the same merges, special tokens, vocab and encodings; saving again gives the same file."""
    merges = R.train(R.make_text(3, 200), 40)
    tok = _tok_from(impl, merges, {EOT: 296, "<|pad|>": 297})
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    text = path.read_text(encoding="utf-8")
    try:
        json.loads(text)
    except ValueError as exc:
        fail(f"the saved file is not valid JSON ({exc}); it starts {text[:80]!r}")
    back = impl.BPETokenizer.load(path)
    check(list(back.merges.items()) == list(tok.merges.items()), "load(save(t)).merges differ from t.merges (keep the rank order)")
    check(back.special_tokens == tok.special_tokens, f"load(save(t)).special_tokens: expected {tok.special_tokens}, got {back.special_tokens}")
    check(back.vocab == tok.vocab, "load(save(t)).vocab differs from t.vocab")
    probe = R.make_text(30, 40) + EOT
    check(back.encode(probe, allowed_special="all") == tok.encode(probe, allowed_special="all"), "the loaded tokenizer encodes differently")
    check(back.to_json() == text and tok.to_json() == text, "to_json() of the same tokenizer (or of its loaded copy) should give the same text as the file")


def test_from_json_rejects_what_is_not_a_tokenizer(impl) -> None:
    """from_json raises ValueError for text that is not a tokenizer file"""
    expect_raises(ValueError, impl.BPETokenizer.from_json, "this is not JSON", what="BPETokenizer.from_json('this is not JSON')")
    expect_raises((ValueError, KeyError, TypeError), impl.BPETokenizer.from_json, "[1, 2, 3]", what="BPETokenizer.from_json('[1, 2, 3]')")


# ----------------------------------------------------------------------------- devices


@depends_on("text_to_ids", "build_vocab", "merge", "pretokenize", "split_on_special")
def test_ids_feed_an_embedding_on_every_device_and_precision(impl, setting) -> None:
    """encoded ids index an embedding table on this device / precision

    Encoded ids are Python ints below vocab_size and index an embedding table on this device / precision."""
    merges = R.train(R.make_text(3, 200), 30)
    tok = _tok_from(impl, merges, {EOT: 286})
    ids = tok.encode(R.make_text(40, 30) + EOT, allowed_special="all")
    check(all(type(i) is int and 0 <= i < tok.vocab_size for i in ids),
          f"encode should give Python ints in [0, vocab_size={tok.vocab_size}); got {sorted({type(i).__name__ for i in ids})}, max {max(ids)}")  # fmt: skip
    emb = torch.nn.Embedding(tok.vocab_size, 16)
    batch = torch.tensor([ids], dtype=torch.long)  # (1, T)
    dev_emb = setting.module(torch.nn.Embedding(tok.vocab_size, 16))
    dev_emb.load_state_dict(emb.state_dict())
    with setting.autocast():
        out = dev_emb(setting.tensor(batch))  # (1, T, 16)
    setting.sync()
    check(out.device.type == setting.device, f"output on {out.device}, expected {setting.device}")
    check_close(out.float().cpu(), emb.weight.detach()[batch], what=f"embedding of the encoded ids on {setting.id}",
                reference="torch.nn.Embedding on the CPU", **setting.tol)  # fmt: skip
