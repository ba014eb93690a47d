"""The text Part 2 trains on, tokenised once and cached (given machinery for ``nox -s train``).

Corpora (nothing is downloaded, ever):

``python`` (the default)  the Python standard library's own ``.py`` source, read from the running
                          interpreter (``sysconfig``'s ``stdlib`` folder; the PSF licence; never copied
                          into this repository). Test suites and vendored packages are left out, files
                          are taken in sorted order, up to ``max_bytes``. Several MB of real code on
                          every machine: a model that learns to write Python.
``lessons``               this course's own lessons (``stages/*/README.md``): a small English corpus.
``FILE``                  any UTF-8 text file you bring (a book, your own code).

The train/validation split is fixed: with many documents, each file whose name hashes
(CRC-32) to 0 mod 10 is a validation file (about 10%, spread over the whole corpus); a corpus
of fewer than 10 documents gives the last 10% of each to validation. Documents are joined
with the tokenizer's ``<|endoftext|>`` token.

Cache (``.llmfs/data/``, git-ignored), keyed by hashes so that it is rebuilt when anything changes:
  tokenizer-<key>.json         the BPE tokenizer trained on a sample of the training split;
                               key = sha256 of (corpus text, vocab size, your tokenizer.py)
  ids-<key>/{train,val}.bin    the ids as raw uint16 (uint32 for vocabularies over 65536), read
                               back as NumPy memmaps; key = sha256 of (corpus text, tokenizer JSON)
  ids-<key>/meta.json          token and byte counts; written last, so its presence means complete.
Every file is written to a temporary name and renamed, so an interrupted run never leaves a
half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sysconfig
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from shared.registry import ROOT, STAGES_DIR

__all__ = [
    "CorpusError",
    "Corpus",
    "Dataset",
    "DATA_DIR",
    "ENDOFTEXT",
    "load_corpus",
    "split_documents",
    "tokenizer_for",
    "build_dataset",
    "bigram_loss",
]

DATA_DIR: Path = Path(os.environ.get("LLMFS_HOME") or ROOT / ".llmfs") / "data"  # LLMFS_HOME moves .llmfs
ENDOFTEXT = "<|endoftext|>"
DEFAULT_MAX_BYTES = 4_000_000  # of stdlib source: ~1.5M tokens at vocab 1024, encoded once in ~10 s
TOKENIZER_SAMPLE_BYTES = 400_000  # the tokenizer trains on this much of the training split (a few seconds)
VAL_MOD = 10  # one file in ten (by hash) is validation
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3", "ensurepip"}


class CorpusError(Exception):
    """Bad corpus input: the message is one line for the user (exit status 2)."""


@dataclass
class Corpus:
    name: str  # "python", "lessons" or the file's path
    documents: list[tuple[str, str]]  # (document name, text), in a fixed order
    source: str = ""  # where it was read from, for the report

    @property
    def n_bytes(self) -> int:
        return sum(len(t.encode("utf-8")) for _, t in self.documents)

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for name, text in self.documents:
            h.update(name.encode("utf-8") + b"\0" + text.encode("utf-8") + b"\0")
        return h.hexdigest()


def _stdlib_corpus(max_bytes: int) -> Corpus:
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise CorpusError(f"this Python's standard library folder {root} is missing; pass --corpus FILE")
    files = sorted(
        (p for p in root.rglob("*.py") if not (_SKIP_DIRS & set(p.relative_to(root).parts[:-1]))),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    docs: list[tuple[str, str]] = []
    total = 0
    for p in files:
        if total + p.stat().st_size > max_bytes:
            continue  # too big for what is left (checked before reading: reading all 12 MB takes seconds)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # a few stdlib files are deliberately not UTF-8
        size = len(text.encode("utf-8"))
        if total + size > max_bytes:
            continue  # keep going: smaller files later may still fit, and the order stays fixed
        docs.append((p.relative_to(root).as_posix(), text))
        total += size
    if not docs:
        raise CorpusError(f"no readable .py files under {root}; pass --corpus FILE")
    return Corpus("python", docs, str(root))


def _lessons_corpus() -> Corpus:
    docs = [(p.parent.name, p.read_text(encoding="utf-8")) for p in sorted(STAGES_DIR.glob("*/README.md"))]
    if not docs:
        raise CorpusError(f"no lessons found under {STAGES_DIR}")
    return Corpus("lessons", docs, str(STAGES_DIR))


def _file_corpus(path: Path) -> Corpus:
    if not path.exists():
        raise CorpusError(f"corpus file {path} does not exist")
    if not path.is_file():
        raise CorpusError(f"corpus {path} is not a file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"corpus file {path} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path}: {exc.strerror}") from None
    if not text.strip():
        raise CorpusError(f"corpus file {path} is empty")
    return Corpus(str(path), [(path.name, text)], str(path.resolve()))


def load_corpus(spec: str = "python", max_bytes: int = DEFAULT_MAX_BYTES) -> Corpus:
    """``python`` (the standard library's source, up to ``max_bytes``), ``lessons``, or a path to a UTF-8 file."""
    if spec == "python":
        return _stdlib_corpus(max_bytes)
    if spec == "lessons":
        return _lessons_corpus()
    return _file_corpus(Path(spec).expanduser())


def split_documents(corpus: Corpus) -> tuple[list[str], list[str]]:
    """(training texts, validation texts): whole files by hash, or the last 10% of each of a few documents."""
    docs = corpus.documents
    if len(docs) >= VAL_MOD:
        train = [t for n, t in docs if zlib.crc32(n.encode("utf-8")) % VAL_MOD != 0]
        val = [t for n, t in docs if zlib.crc32(n.encode("utf-8")) % VAL_MOD == 0]
        if val and train:
            return train, val
    train, val = [], []
    for _, text in docs:
        cut = int(len(text) * (1 - 1 / VAL_MOD))
        train.append(text[:cut])
        val.append(text[cut:])
    return train, val


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8") if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def _sample(texts: Sequence[str], n_chars: int) -> str:
    """About ``n_chars`` of ``texts``: every k-th document, so that the sample spans the whole corpus."""
    total = sum(len(t) for t in texts)
    if total <= n_chars:
        return "\n".join(texts)
    stride = max(1, total // n_chars)
    return "\n".join(texts[::stride])[:n_chars]


def tokenizer_for(
    tok_module: ModuleType, corpus: Corpus, vocab_size: int, data_dir: Path | None = None
) -> tuple[Any, str]:
    """(tokenizer, its JSON text): stage 2.1's BPETokenizer trained on a sample of the training split, cached.

    The cache key includes the source of ``tok_module``'s file, so editing your tokenizer retrains it.
    """
    impl_src = Path(tok_module.__file__).read_bytes() if getattr(tok_module, "__file__", None) else b""
    key = _sha(corpus.sha256, str(vocab_size), impl_src)[:16]
    data_dir = data_dir or DATA_DIR
    path = data_dir / f"tokenizer-{key}.json"
    cls = tok_module.BPETokenizer
    if path.is_file():
        try:
            return cls.load(path), path.read_text(encoding="utf-8")
        except (ValueError, KeyError, TypeError, OSError):
            path.unlink(missing_ok=True)  # damaged: train it again
    train, _ = split_documents(corpus)
    tok = cls.train(_sample(train, TOKENIZER_SAMPLE_BYTES), vocab_size, special_tokens=(ENDOFTEXT,))
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".tokenizer-{key}.{os.getpid()}.json"
    try:
        tok.save(tmp)
        text = tmp.read_text(encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return tok, text


@dataclass
class Dataset:
    train: np.ndarray  # (N_train,) ids, a read-only memmap
    val: np.ndarray  # (N_val,) ids
    train_bytes: int  # UTF-8 bytes of text behind each split (for bits per byte)
    val_bytes: int
    key: str = ""
    folder: Path = field(default_factory=Path)

    def splits(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val}

    def bytes_per_token(self, split: str = "val") -> float:
        ids = self.val if split == "val" else self.train
        n = self.val_bytes if split == "val" else self.train_bytes
        return n / max(1, len(ids))


def _encode_all(tok: Any, texts: Sequence[str], eot: int | None, progress: Callable[[int, int], None] | None) -> list[int]:
    ids: list[int] = []
    for k, text in enumerate(texts):
        ids.extend(tok.encode(text))
        if eot is not None:
            ids.append(eot)
        if progress is not None:
            progress(k + 1, len(texts))
    return ids


def build_dataset(
    tok: Any,
    tokenizer_json: str,
    corpus: Corpus,
    data_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """The corpus's ids for both splits, from the cache or encoded now (``progress(done, total)`` per document)."""
    key = _sha(corpus.sha256, tokenizer_json)[:16]
    folder = (data_dir or DATA_DIR) / f"ids-{key}"
    meta_path = folder / "meta.json"
    vocab = int(tok.vocab_size)
    dtype = np.uint16 if vocab <= 2**16 else np.uint32
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            arrays = {s: np.memmap(folder / f"{s}.bin", dtype=np.dtype(meta["dtype"]), mode="r") for s in ("train", "val")}
            if all(len(arrays[s]) == meta[f"{s}_tokens"] for s in arrays):
                return Dataset(arrays["train"], arrays["val"], meta["train_bytes"], meta["val_bytes"], key, folder)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # damaged: build it again
    train_texts, val_texts = split_documents(corpus)
    eot = tok.special_tokens.get(ENDOFTEXT) if hasattr(tok, "special_tokens") else None
    n_docs = len(train_texts) + len(val_texts)

    def _progress_offset(offset: int) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, _total: progress(offset + done, n_docs)

    ids = {
        "train": _encode_all(tok, train_texts, eot, _progress_offset(0)),
        "val": _encode_all(tok, val_texts, eot, _progress_offset(len(train_texts))),
    }
    for v in ids.values():
        if v and (min(v) < 0 or max(v) >= vocab):
            raise ValueError(f"the tokenizer produced id {max(v) if max(v) >= vocab else min(v)} outside 0 .. vocab_size-1 = {vocab - 1}")
    folder.mkdir(parents=True, exist_ok=True)
    for s, v in ids.items():
        _atomic_write(folder / f"{s}.bin", np.asarray(v, dtype=dtype).tobytes())
    meta = {
        "corpus": corpus.name,
        "corpus_sha256": corpus.sha256,
        "tokenizer_sha256": hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest(),
        "dtype": np.dtype(dtype).name,
        "train_tokens": len(ids["train"]),
        "val_tokens": len(ids["val"]),
        "train_bytes": sum(len(t.encode("utf-8")) for t in train_texts),
        "val_bytes": sum(len(t.encode("utf-8")) for t in val_texts),
    }
    _atomic_write(meta_path, json.dumps(meta, indent=1).encode("utf-8"))
    arrays = {s: np.memmap(folder / f"{s}.bin", dtype=dtype, mode="r") for s in ("train", "val")}
    return Dataset(arrays["train"], arrays["val"], meta["train_bytes"], meta["val_bytes"], key, folder)


def bigram_loss(train: np.ndarray, val: np.ndarray, vocab_size: int, ks: Sequence[float] = (1.0, 0.1, 0.01)) -> tuple[float, float]:
    """(validation cross-entropy in nats per token, k) of the best add-k bigram model counted on ``train``.

    P(b | a) = (count(a, b) + k) / (count(a) + k * V). The k is the best of ``ks`` on the validation
    split itself, so the baseline is as strong as a table of counts gets: beating it means the model
    learned more than which token tends to follow which.
    """
    V = int(vocab_size)
    tr = np.asarray(train, dtype=np.int64)
    va = np.asarray(val, dtype=np.int64)
    codes, counts = np.unique(tr[:-1] * V + tr[1:], return_counts=True)  # sparse pair counts
    row = np.bincount(tr[:-1], minlength=V).astype(np.float64)  # count(a): how often a is followed by anything
    q = va[:-1] * V + va[1:]
    pos = np.searchsorted(codes, q)
    pos_c = np.minimum(pos, len(codes) - 1)
    pair = np.where(codes[pos_c] == q, counts[pos_c], 0).astype(np.float64)
    best = (math.inf, ks[0])
    for k in ks:
        p = (pair + k) / (row[va[:-1]] + k * V)
        nll = float(-np.log(p).mean())
        best = min(best, (nll, k))
    return best
