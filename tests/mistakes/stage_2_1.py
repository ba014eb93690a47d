from tests.mistakes import Mistake

MISTAKES = [
    Mistake(
        "2.1", "ord() instead of UTF-8 bytes",
        'return list(text.encode("utf-8"))',
        "return [ord(c) for c in text]",
        "ord() of each character",
    ),
    Mistake(
        "2.1", "each distinct pair counted once",
        "for pair in zip(ids, ids[1:], strict=False):",
        "for pair in set(zip(ids, ids[1:], strict=False)):",
        "each distinct pair counted once",
    ),
    Mistake(
        "2.1", "a merge that does not skip past a replaced pair",
        "i += 2  # skip both halves of the pair",
        "i += 1",
        "does not skip past a replaced pair",
    ),
    Mistake(
        "2.1", "pre-tokenized by str.split",
        "return _SPLIT.findall(text)",
        "return text.split()",
        "split on whitespace",
    ),
    Mistake(
        "2.1", "special tokens not escaped",
        'pattern = "(" + "|".join(regex.escape(s) for s in specials) + ")"',
        'pattern = "(" + "|".join(specials) + ")"',
        "not escaped",
    ),
    Mistake(
        "2.1", "ties broken differently",
        "return (-count, pair)",
        "return (-count, (-pair[0], -pair[1]))",
        "ties broken differently",
    ),
    Mistake(
        "2.1", "pre-split ignored",
        "chunk_counts.update(pretokenize(piece))",
        "chunk_counts.update([piece])",
        "pre-split ignored",
    ),
    Mistake(
        "2.1", "special tokens left in the training text",
        "        for piece in split_on_special(text, specials):\n            if piece not in specials:",
        "        for piece in [text]:\n            if True:",
        "special tokens left in the training text",
    ),
    Mistake(
        "2.1", "merges applied in the wrong order (leftmost first)",
        'pair = min(zip(ids, ids[1:], strict=False), key=lambda p: self.merges.get(p, float("inf")))',
        "pair = next((p for p in zip(ids, ids[1:], strict=False) if p in self.merges), (-1, -1))",
        "merges applied in the wrong order",
    ),
    Mistake(
        "2.1", "special token split",
        "for piece in split_on_special(text, allowed):",
        "for piece in [text]:",
        "special token split into ordinary tokens",
    ),
    Mistake(
        "2.1", "special token produced from ordinary text",
        '        if allowed_special == "none":\n            allowed: set[str] = set()',
        '        if allowed_special == "none":\n            allowed = set(self.special_tokens)',
        "special token produced from ordinary text",
    ),
    Mistake(
        "2.1", "decode that crashes on a split multi-byte character",
        'return data.decode("utf-8", errors="replace")',
        'return data.decode("utf-8")',
        "decode that crashes on a split multi-byte character",
    ),
    Mistake(
        "2.1", "each token decoded on its own",
        '        return data.decode("utf-8", errors="replace")',
        '        return "".join(self.vocab[int(i)].decode("utf-8", errors="replace") for i in ids)',
        "each token decoded on its own",
    ),
]
