"""Stage 2.5's finetuning data, generated deterministically from the course's code corpus (no download).

The task: a prompt names a function and its arguments; the answer is that function's header in a
fixed format::

    prompt    "function read_config with arguments path, mode"
    response  "def read_config(path, mode):"

Pretraining alone never answers in this format (a base model continues a prompt with more prose or a
new file), so supervised finetuning moves the held-out *format-following rate* from ~0% to near 100%.

The preference rule: the *chosen* header carries a return annotation, the *rejected* one does not::

    chosen    "def read_config(path, mode) -> None:"
    rejected  "def read_config(path, mode):"

Both follow the format; only the chosen one follows the rule, which the pretraining corpus (the
standard library is mostly unannotated) does not favour and the SFT data do not favour either: half of
the SFT answers carry ``-> None`` (by a hash of the name), so the SFT model knows both endings and picks
one by chance. DPO then moves the held-out *preference accuracy* (the implicit reward margin > 0) from
50% to near 100%, and the rule rate of the greedy answers with it. (With SFT answers that never carry
the annotation, DPO can only push the one ending the model knows down, and the format breaks.)

The functions come from the corpus: every simple header ``def name(a, b):`` of the Python standard
library's source (``shared.corpus``, the default pretraining corpus), 1-3 plain arguments, public
names. ``synthetic_headers`` makes the same kind of headers from word lists, for tests and for a
corpus without Python in it. The held-out split: each function name whose CRC-32 is 0 mod 5 (about
20%), so no held-out function is ever seen in finetuning. Pure Python: no torch, no NumPy.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Header",
    "FinetuneData",
    "prompt_for",
    "response_for",
    "sft_response_for",
    "chosen_for",
    "follows_format",
    "follows_rule",
    "is_exact",
    "headers_from_texts",
    "synthetic_headers",
    "make_data",
]

HELDOUT_MOD = 5  # a name whose CRC-32 is 0 mod 5 is held out (about 20%)
_HEADER = re.compile(r"^[ \t]*def ([a-z][a-z0-9_]{1,23})\(([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*){0,2})\):[ \t]*$", re.M)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


@dataclass(frozen=True)
class Header:
    name: str  # the function's name, e.g. "read_config"
    args: tuple[str, ...]  # its arguments, e.g. ("path", "mode")


@dataclass
class FinetuneData:
    """The two sets and their held-out splits."""

    sft_train: list[tuple[str, str]] = field(default_factory=list)  # (prompt, response)
    sft_heldout: list[tuple[str, str]] = field(default_factory=list)
    pref_train: list[tuple[str, str, str]] = field(default_factory=list)  # (prompt, chosen, rejected)
    pref_heldout: list[tuple[str, str, str]] = field(default_factory=list)
    source: str = ""  # where the function names came from

    def summary(self) -> dict[str, int | str]:
        return {"source": self.source, "sft_train": len(self.sft_train), "sft_heldout": len(self.sft_heldout),
                "pref_train": len(self.pref_train), "pref_heldout": len(self.pref_heldout)}  # fmt: skip


def prompt_for(h: Header) -> str:
    return f"function {h.name} with arguments {', '.join(h.args)}"


def response_for(h: Header) -> str:
    """DPO's rejected answer: the header without a return annotation."""
    return f"def {h.name}({', '.join(h.args)}):"


def sft_response_for(h: Header) -> str:
    """The SFT answer: with ``-> None`` for half of the names (a hash of the name decides), else without."""
    return chosen_for(h) if zlib.crc32(f"{h.name}#annotated".encode()) % 2 else response_for(h)


def chosen_for(h: Header) -> str:
    """DPO's chosen answer: the same header with a return annotation."""
    return f"def {h.name}({', '.join(h.args)}) -> None:"


def _header_of(prompt: str) -> Header | None:
    m = re.fullmatch(r"function (\S+) with arguments (.+)", prompt)
    return Header(m.group(1), tuple(m.group(2).split(", "))) if m else None


def follows_format(prompt: str, response: str) -> bool:
    """The answer is one header in the fixed format and nothing else: ``def name(a, b):``, plain
    identifiers, ", " between arguments, an optional return annotation ``-> X`` (surrounding
    whitespace ignored). Whether it is the *asked* function is ``is_exact``'s question."""
    pattern = rf"def {_IDENT}\((?:{_IDENT}(?:, {_IDENT})*)?\)(?: -> {_IDENT})?:"
    return re.fullmatch(pattern, response.strip()) is not None


def is_exact(prompt: str, response: str) -> bool:
    """The format, with exactly the asked name and arguments (the model must copy them from the prompt)."""
    h = _header_of(prompt)
    if h is None or not follows_format(prompt, response):
        return False
    pattern = rf"def {re.escape(h.name)}\({re.escape(', '.join(h.args))}\)(?: -> {_IDENT})?:"
    return re.fullmatch(pattern, response.strip()) is not None


def follows_rule(prompt: str, response: str) -> bool:
    """The format, with the preferred return annotation ``-> None``."""
    return follows_format(prompt, response) and response.strip().endswith(") -> None:")


def headers_from_texts(texts: Iterable[str]) -> list[Header]:
    """Every simple public header (1-3 plain arguments, no defaults or annotations) in ``texts``,
    one per function name (the first seen), sorted by name."""
    seen: dict[str, Header] = {}
    for text in texts:
        for m in _HEADER.finditer(text):
            name, args = m.group(1), tuple(m.group(2).split(", "))
            if name.startswith("_") or name in seen or len(set(args)) != len(args):
                continue
            seen[name] = Header(name, args)
    return [seen[n] for n in sorted(seen)]


_VERBS = ("get", "set", "read", "write", "parse", "load", "save", "make", "find", "check", "update", "build",
          "open", "close", "send", "format", "split", "join", "count", "clear")  # fmt: skip
_NOUNS = ("config", "line", "value", "name", "path", "item", "key", "file", "data", "node", "user", "token",
          "header", "block", "list", "table", "entry", "field", "buffer", "state")  # fmt: skip
_ARGS = ("self", "path", "name", "value", "key", "data", "text", "size", "mode", "node", "items", "index",
         "count", "line", "args", "obj", "default", "timeout", "level", "prefix")  # fmt: skip


def synthetic_headers(n: int = 400, seed: int = 0) -> list[Header]:
    """``n`` distinct headers ``verb_noun(a[, b[, c]])`` from word lists, deterministic in ``seed``."""
    rng = random.Random(seed)
    names = [f"{v}_{o}" for v in _VERBS for o in _NOUNS]
    rng.shuffle(names)
    out = []
    for name in names[:n]:
        k = rng.choice((1, 2, 2, 3))
        out.append(Header(name, tuple(rng.sample(_ARGS, k))))
    return sorted(out, key=lambda h: h.name)


def _heldout(h: Header) -> bool:
    return zlib.crc32(h.name.encode("utf-8")) % HELDOUT_MOD == 0


def make_data(headers: Sequence[Header], *, max_train: int | None = None, max_heldout: int | None = None,
              seed: int = 0, source: str = "") -> FinetuneData:  # fmt: skip
    """The instruction pairs and preference triples of ``headers``, split by name into train and
    held-out, each shuffled with ``seed`` and cut to ``max_train`` / ``max_heldout``. The SFT and the
    preference sets use the same functions (DPO starts from the SFT model on the same prompts)."""
    rng = random.Random(seed)
    train = [h for h in headers if not _heldout(h)]
    held = [h for h in headers if _heldout(h)]
    rng.shuffle(train)
    rng.shuffle(held)
    train, held = train[:max_train], held[:max_heldout]
    data = FinetuneData(source=source)
    for split, hs in (("train", train), ("heldout", held)):
        pairs = [(prompt_for(h), sft_response_for(h)) for h in hs]
        triples = [(prompt_for(h), chosen_for(h), response_for(h)) for h in hs]
        setattr(data, f"sft_{split}", pairs)
        setattr(data, f"pref_{split}", triples)
    return data
