"""Named mistakes that are never contradicted (DESIGN §5). Pure Python: no torch, no NumPy.

A check's hint may name the mistake that explains its failure. The name is only worth
showing when nothing else explains the failure equally well, and when no other check
rules it out. This module holds the two halves of that rule:

* **In the check** (``shared.testing``): every candidate whose output matches the
  learner's on the check's probe is kept, each with the *part* of the learner's code it
  lives in (``"causal mask"``, ``"merge_heads"``). One candidate is named; several are
  listed as "one of: A; B". The candidates travel in the hint as one data line
  (``encode``), below the human-readable line.
* **In the report** (``reconcile``, called once per stage where results are assembled):
  each check declares, next to its code, which parts it establishes when it passes and
  which parts it builds on::

      @covers("causal mask")                 # passing proves the causal mask is right
      def test_causal_head_matches_sdpa(impl): ...

      @depends_on("LayerNorm")               # uses the learner's LayerNorm
      def test_sublayer_connection(impl): ...

  A candidate in a part that a passing check covers is dropped. A failing check that
  depends on a part whose own check failed says "depends on <part> (failed above)"
  instead of repeating that failure. The declarations are read from the test files'
  source (``ast``), so the grader never imports them (nor torch).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

__all__ = ["DATA_PREFIX", "Declared", "declared", "encode", "mistake_line", "parse", "reconcile"]

#: The data line's prefix. The report removes the line; only a raw pytest run shows it.
DATA_PREFIX = "[hint-data] "
_LIKELY = "  Likely mistake: "
_FAILED = ("failed", "timed out", "crashed")


#: Why a name is given: its output was computed and matches, or the check's own evidence points at it.
MATCHED = "matched"
DIAGNOSED = "diagnosed"


def mistake_line(names: Sequence[str], why: str = MATCHED) -> str:
    """The line a learner reads: one name, or "one of" several (each fits the evidence equally well)."""
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        return ""
    if len(names) == 1:
        reason = "your output matches what that mistake produces" if why == MATCHED else "the evidence above fits it"
        return f"{_LIKELY}{names[0]} ({reason})."
    listed = "; ".join(f"({i}) {n}" for i, n in enumerate(names, 1))
    reason = "your output matches what each of these produces on this input" if why == MATCHED else "the evidence above fits each of these"
    return f"{_LIKELY}one of: {listed} ({reason})."


def encode(candidates: Sequence[tuple[str, str]], why: str = MATCHED) -> str:
    """``"\\n<human line>\\n<data line>"`` for the candidates ``(name, part)``; empty when there are none."""
    cands = list(dict.fromkeys((str(n), str(p)) for n, p in candidates if n))
    if not cands:
        return ""
    data = json.dumps({"mistakes": [[n, p] for n, p in cands], "why": why}, ensure_ascii=True)
    return f"\n{mistake_line([n for n, _ in cands], why)}\n  {DATA_PREFIX}{data}"


def parse(hint: str) -> tuple[str, list[tuple[str, str]] | None, str]:
    """(the hint without its mistake lines, the candidates, why) — candidates None when the hint carries no data."""
    lines = hint.splitlines()
    cands: list[tuple[str, str]] = []
    found = False
    why = MATCHED
    keep: list[str] = []
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith(DATA_PREFIX):
            try:
                data = json.loads(s[len(DATA_PREFIX) :])
                cands += [(str(n), str(p)) for n, p in data.get("mistakes", [])]
                why = str(data.get("why", MATCHED))
                found = True
            except (ValueError, TypeError):
                pass
            if keep and keep[-1].startswith(_LIKELY) and i > 0:
                keep.pop()  # the human line rendered just above its data
            continue
        keep.append(line)
    return "\n".join(keep), (cands if found else None), why


# ---------------------------------------------------------------- declarations in the test files


class Declared:
    """What one check function declares: the parts it covers and the parts it builds on."""

    __slots__ = ("covers", "depends")

    def __init__(self, covers: Iterable[str] = (), depends: Iterable[str] = ()) -> None:
        self.covers = tuple(covers)
        self.depends = tuple(depends)


def _strings(call: ast.Call) -> list[str]:
    return [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


@cache
def _declared_in(path: str, mtime: float) -> dict[str, Declared]:
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    out: dict[str, Declared] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        covers: list[str] = []
        depends: list[str] = []
        for dec in node.decorator_list:
            if not isinstance(dec, ast.Call):
                continue
            f = dec.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name == "covers":
                covers += _strings(dec)
            elif name == "depends_on":
                depends += _strings(dec)
        if covers or depends:
            out[node.name] = Declared(covers, depends)
    return out


def declared(nodeid: str, root: Path | None = None) -> Declared:
    """The declarations of the check ``nodeid`` (``path/test_x.py::test_y[cpu-fp32]``)."""
    if "::" not in nodeid:
        return Declared()
    file, _, rest = nodeid.partition("::")
    func = rest.split("::")[-1].split("[")[0]
    if root is None:
        from shared.registry import ROOT

        root = ROOT
    p = Path(file) if Path(file).is_absolute() else Path(root, file)
    try:
        mtime = p.stat().st_mtime
    except OSError:
        return Declared()
    return _declared_in(str(p), mtime).get(func, Declared())


# ---------------------------------------------------------------- reconciling a stage's hints


class _Check(Protocol):
    nodeid: str
    name: str
    status: str
    hint: str


def _base_name(name: str) -> str:
    """A check's name without its matrix cell (``[cpu-fp32]``)."""
    return name.rsplit(" [", 1)[0] if name.endswith("]") else name


def reconcile(checks: Sequence[_Check], root: Path | None = None) -> None:
    """Rewrite the hints of one stage's failing checks in place so that no name is contradicted.

    * A candidate mistake in a part that some passing check covers is dropped; the rest are
      named (one) or listed (several).
    * A failing check that depends on a part covered by another check that failed gets
      "depends on <part> (failed above: <that check>)" instead of its own hint.
    * A mistake named on its own by an earlier check is not explained again: later checks
      (other matrix cells included) say "the same mistake as in <that check> above".
    Data lines are always removed.
    """
    decl = {c.nodeid: declared(c.nodeid, root) for c in checks}
    proven: set[str] = set()
    broken: dict[str, str] = {}  # part -> the first failing check that covers it
    for c in checks:
        for part in decl[c.nodeid].covers:
            if c.status == "passed":
                proven.add(part)
            elif c.status in _FAILED:
                broken.setdefault(part, _base_name(c.name))
    shown: dict[str, str] = {}  # a mistake named on its own -> the first check that named it
    for c in checks:
        if c.status not in _FAILED or not c.hint:
            continue
        d = decl[c.nodeid]
        upstream = [(p, broken[p]) for p in d.depends if p in broken and p not in d.covers and broken[p] != _base_name(c.name)]
        if upstream:
            parts = ", ".join(dict.fromkeys(p for p, _ in upstream))
            where = "; ".join(dict.fromkeys(f"'{n}'" for _, n in upstream))
            c.hint = (
                f"depends on {parts} (failed above: {where}). Fix that first: this check uses it, so its"
                " result says nothing new until then."
            )
            continue
        text, cands, why = parse(c.hint)
        if cands is None:
            c.hint = text
            continue
        kept = [(n, p) for n, p in cands if not (p and p in proven)]
        names = [n for n, _ in kept]
        if len(names) == 1 and names[0] in shown and shown[names[0]] != _base_name(c.name):
            c.hint = f"the same mistake as in '{shown[names[0]]}' above: {names[0]}."
            continue
        if len(names) == 1:
            shown.setdefault(names[0], _base_name(c.name))
        line = mistake_line(names, why)
        c.hint = text + ("\n" + line if line else "")


def reconcile_dicts(checks: Sequence[dict[str, Any]], root: Path | None = None) -> None:
    """``reconcile`` for checks given as dicts with keys nodeid, name, status, hint (course tests)."""

    class _C:
        def __init__(self, d: dict[str, Any]) -> None:
            self.__dict__["d"] = d

        def __getattr__(self, k: str) -> Any:
            return self.__dict__["d"].get(k, "")

        def __setattr__(self, k: str, v: Any) -> None:
            self.__dict__["d"][k] = v

    reconcile([_C(d) for d in checks], root)  # type: ignore[list-item]
