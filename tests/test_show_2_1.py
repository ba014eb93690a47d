"""Stage 2.1's figures show what they claim (``nox -s show -- 2.1``): checked against an independent
BPE encoder (GPT-2's ``bpe()``, in the stage's test reference) on the reference's own merges."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from shared.registry import BY_ID
from tests.test_show import env, reference_data  # noqa: F401  (env: a fixture)


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_2_1(env: None) -> None:  # noqa: F811
    stage = BY_ID["2.1"]
    figures = _module("course_figures_2_1", stage.folder / "figures.py")
    ref = _module("course_reference_2_1", stage.tests_dir / "_reference.py")
    solution = _module("course_solution_2_1", stage.module_path("solution"))
    tok = solution.BPETokenizer.train(figures._text(1, 3000), 256 + figures.N_MERGES + 1)
    merges = list(tok.merges)
    held = figures._text(2, 1500)
    comp = reference_data(stage, "compression-by-merges")
    assert comp["merges"] == figures.STEPS and comp["bytes_per_token"][0] == 1.0
    for k, bpt in zip(comp["merges"], comp["bytes_per_token"], strict=True):
        assert abs(bpt - len(held.encode()) / len(ref.encode(held, merges[:k]))) < 1e-9, k
    assert all(a < b for a, b in zip(comp["bytes_per_token"], comp["bytes_per_token"][1:], strict=False))  # every step compresses more
    lengths = reference_data(stage, "token-lengths")
    assert sum(lengths["counts"]) == figures.N_MERGES
    assert all(s.startswith(" ") for s in lengths["longest"])  # the caption: whole words with their leading space
