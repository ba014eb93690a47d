"""The mistake-naming rules of shared/hints.py and shared/testing.py (DESIGN §5, issue 11), in-process.

The whole path (a learner file graded, hints reconciled) is tested by tests/test_mistakes.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.hints import DATA_PREFIX, declared, encode, parse, reconcile_dicts
from shared.testing import GradingError, check_close, declare_parts, likely

TEST_FILE = '''
from shared.testing import covers, depends_on

@covers("split_heads")
def test_split(impl): ...

@covers("merge_heads")
def test_merge(impl): ...

@depends_on("LayerNorm")
def test_sublayer(impl): ...

@covers("LayerNorm")
def test_norm(impl): ...
'''


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "test_x.py").write_text(TEST_FILE)
    return tmp_path


def _check(name: str, status: str, hint: str = "") -> dict[str, str]:
    return {"nodeid": f"test_x.py::{name}", "name": name, "status": status, "hint": hint}


def test_declarations_are_read_from_the_source(tree: Path) -> None:
    assert declared("test_x.py::test_split", tree).covers == ("split_heads",)
    assert declared("test_x.py::test_sublayer[cpu-fp32]", tree).depends == ("LayerNorm",)
    assert declared("test_x.py::test_unknown", tree).covers == ()


def test_a_name_a_passing_check_rules_out_is_dropped(tree: Path) -> None:
    hint = "merge_heads(x): values differ" + encode([("split by a reshape", "split_heads"), ("merged by a reshape", "merge_heads")])
    checks = [_check("test_split", "passed"), _check("test_merge", "failed", hint)]
    reconcile_dicts(checks, tree)
    assert "Likely mistake: merged by a reshape (your output" in checks[1]["hint"]
    assert "split by a reshape" not in checks[1]["hint"] and DATA_PREFIX not in checks[1]["hint"]


def test_several_names_that_fit_are_listed_as_one_of(tree: Path) -> None:
    hint = "values differ" + encode([("A", "split_heads"), ("B", "merge_heads")])
    checks = [_check("test_split", "failed", hint), _check("test_merge", "failed", "x")]
    reconcile_dicts(checks, tree)
    assert "one of: (1) A; (2) B" in checks[0]["hint"]


def test_a_check_built_on_a_failed_part_says_so(tree: Path) -> None:
    checks = [_check("test_norm", "failed", "LayerNorm: values differ"), _check("test_sublayer", "failed", "E[x^2] advice")]
    reconcile_dicts(checks, tree)
    assert checks[1]["hint"].startswith("depends on LayerNorm (failed above: 'test_norm')")
    assert checks[0]["hint"] == "LayerNorm: values differ"


def test_a_check_built_on_a_passing_part_keeps_its_hint(tree: Path) -> None:
    checks = [_check("test_norm", "passed"), _check("test_sublayer", "failed", "post-LN: values differ")]
    reconcile_dicts(checks, tree)
    assert checks[1]["hint"] == "post-LN: values differ"


def test_one_mistake_is_explained_once(tree: Path) -> None:
    hint = "values differ" + encode([("the mistake", "")])
    checks = [_check("test_split", "failed", hint), _check("test_merge", "failed", hint)]
    reconcile_dicts(checks, tree)
    assert "Likely mistake: the mistake" in checks[0]["hint"]
    assert checks[1]["hint"] == "the same mistake as in 'test_split' above: the mistake."


def test_check_close_keeps_every_matching_mistake_and_previews_the_largest_difference() -> None:
    got = np.zeros(20)
    got[13] = 5.0
    with pytest.raises(GradingError) as err:
        check_close(got, np.zeros(20), what="x", mistakes={"A": got.copy(), "B": lambda: got.copy(), "C": np.ones(20)})
    text, cands, _ = parse(str(err.value))
    assert cands == [("A", ""), ("B", "")]
    assert "largest difference 5 at index (13,)" in text
    assert "expected[10:16]: [0, 0, 0, *0*, 0, 0]" in text and "got[10:16]:      [0, 0, 0, *5*, 0, 0]" in text


def test_parts_are_declared_once() -> None:
    declare_parts({"a course-test mistake": "part one"})
    declare_parts({"a course-test mistake": "part one"})
    with pytest.raises(ValueError):
        declare_parts({"a course-test mistake": "part two"})
    _, cands, why = parse("x" + likely("a course-test mistake"))
    assert cands == [("a course-test mistake", "part one")] and why == "diagnosed"
