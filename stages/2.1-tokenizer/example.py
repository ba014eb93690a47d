"""Stage 2.1's worked example: ``nox -s example -- 2.1 [--version solution]`` (the lesson's "A worked example")."""

from __future__ import annotations

from shared.loader import load

m = load("2.1")  # your skeleton, or the reference with --version solution

TEXT = "hug pug pun bun hugs"
tok = m.BPETokenizer.train(TEXT, vocab_size=256 + 8 + 1)  # 8 merges and <|endoftext|>


def show(pair: tuple[int, int]) -> str:
    return f"{tok.vocab[pair[0]]!r} + {tok.vocab[pair[1]]!r}"


# The training, step by step: recount the pairs in every chunk, merge the winner.
words = [m.text_to_ids(chunk) for chunk in m.pretokenize(TEXT)]
print("chunks:", m.pretokenize(TEXT))
for pair, new_id in tok.merges.items():
    counts: dict[tuple[int, int], int] = {}
    for word in words:
        m.get_pair_counts(word, counts)
    tied = sorted(p for p, c in counts.items() if c == counts[pair])
    line = f"{new_id}: {pair} = {show(pair):<14} -> {tok.vocab[new_id]!r:<8} count {counts[pair]}"
    if len(tied) > 1:
        line += f", tied with {', '.join(str(p) for p in tied if p != pair)}"
    print(line)
    words = [m.merge(word, pair, new_id) for word in words]
print("special tokens:", tok.special_tokens, " vocab_size:", tok.vocab_size)

print()
ids = tok.encode("hugs bun pug")
print("encode('hugs bun pug') =", ids)
print("as bytes:", [tok.vocab[i] for i in ids])
print("decode ->", repr(tok.decode(ids)))
print("with <|endoftext|> allowed:", tok.encode("hug<|endoftext|>hug", allowed_special="all"))
print("as plain text:             ", tok.encode("hug<|endoftext|>hug"))

print()
euro = m.text_to_ids("€")
print("text_to_ids('€') =", euro)
print(f"decode({euro}) = {tok.decode(euro)!r}")
print(f"decode({euro[:2]}) = {tok.decode(euro[:2])!r}   (U+FFFD: the character is cut)")
print(f"decode({euro[1:]}) = {tok.decode(euro[1:])!r}")
