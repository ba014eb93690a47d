"""``nox -s example``: every lesson's worked example re-runs with one command and prints exactly the
blocks the lesson marks with ``<!-- example-output -->``; on the untouched skeleton it says which task
is missing in one line; bad input is one line with exit 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from grader.example import (
    expected_output,
    lesson_blocks,
    mismatch,
    run_example,
    shell,
    side_by_side,
    stages_with_examples,
)
from shared.registry import ROOT
from tests.util import skeleton_env

EXAMPLES = stages_with_examples()


def example(*args: str, env: dict[str, str] | None = None, cwd: object = ROOT) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_")}
    full.update(NO_COLOR="1", **(env or {}))
    full.pop("PYTHONPATH", None)  # the command must find the repository by itself
    return subprocess.run([sys.executable, str(ROOT / "grader" / "example.py"), *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_every_part_0_and_1_lesson_has_a_worked_example_to_rerun() -> None:
    assert {"0.1", "0.2", "1.1", "1.2", "1.3", "1.4", "1.5a", "1.5b", "1.6"} <= set(EXAMPLES), EXAMPLES


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run one example in this process (torch is imported once for all of them), as the command does."""
    import torch

    threads = torch.get_num_threads()

    def run(stage: str, version: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        from shared import loader

        for k in [k for k in os.environ if k.startswith("LLMFS_")]:
            monkeypatch.delenv(k)
        monkeypatch.setenv("LLMFS_VERSION", version)
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        settings = getattr(loader, "_SETTINGS", None)  # the loader reads its settings once, at import
        if isinstance(settings, dict):
            monkeypatch.setitem(settings, "version", version)
            monkeypatch.setitem(settings, "deps", "solution")
            monkeypatch.setitem(settings, "impl", {k.removeprefix("LLMFS_IMPL_"): v for k, v in (env or {}).items()})
        torch.set_num_threads(1)  # as the command (and grading) runs
        capsys.readouterr()
        code = run_example(stage, version)
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    torch.set_num_threads(threads)


@pytest.mark.parametrize("stage", EXAMPLES)
def test_the_example_prints_what_the_lesson_shows(stage: str, in_process) -> None:  # type: ignore[no-untyped-def]
    assert expected_output(stage).strip(), f"stage {stage}'s lesson marks no block with <!-- example-output -->"
    if stage == "0.2":
        import torch

        if torch.cuda.is_available() or torch.backends.mps.is_available():
            pytest.skip("stage 0.2's lesson shows a CPU-only machine's run")
    code, out, err = in_process(stage, "solution")
    assert code == 0, err
    problem = mismatch(stage, out)
    assert problem is None, problem


def test_the_command_runs_from_anywhere_and_prints_the_lesson(tmp_path: object) -> None:
    run = example("1.1", "--version", "solution", cwd=tmp_path)  # not the repository root, no PYTHONPATH
    assert run.returncode == 0, run.stderr
    assert run.stdout == expected_output("1.1")


@pytest.mark.parametrize("stage", EXAMPLES)
def test_on_the_untouched_skeleton_it_names_the_task_in_one_line(stage: str, in_process) -> None:  # type: ignore[no-untyped-def]
    code, _, err = in_process(stage, "skeleton", skeleton_env())  # the committed skeletons, whatever a learner's tree holds
    assert code == 1, err
    assert err.count("\n") == 1 and "not implemented yet — Task " in err, err
    assert f"nox -s example -- {stage} --version solution" in err and "Traceback" not in err


def test_the_command_on_a_skeleton_exits_1_with_one_line() -> None:
    run = example("1.1", env=skeleton_env(["1.1"]))
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "Task 1" in run.stderr, run.stderr


@pytest.mark.parametrize("args", [[], ["9.9"], ["all"], ["1.1", "--version", "mine"], ["1.1", "--frobnicate"]])
def test_bad_input_is_one_line_and_exit_2(args: list[str]) -> None:
    run = example(*args)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr


def test_lesson_blocks_and_helpers() -> None:
    lesson = "text\n<!-- example-output -->\n\n```\na\nb\n```\n```\nnot marked\n```\n<!-- example-output -->\n```python\nc\n```\n"
    assert lesson_blocks(lesson) == ["a\nb", "c"]
    machine = lesson.replace("<!-- example-output -->\n```python", "<!-- example-output: machine-dependent -->\n```python")
    assert lesson_blocks(machine) == ["a\nb", "c"]
    assert side_by_side("x\nyy", "1\n2\n3", gap=2) == "x   1\nyy  2\n    3"


def test_shell_replays_a_session(capsys: pytest.CaptureFixture[str]) -> None:
    shell("x = [1,\n     2]   # a list\nx\n# a comment\nprint('hi')\nNone\n")
    assert capsys.readouterr().out == ">>> x = [1,\n...      2]   # a list\n>>> x\n[1, 2]\n>>> # a comment\n>>> print('hi')\nhi\n>>> None\n"


def _suggested_demos() -> list[str]:
    """Every `python stages/...py` command that a stage file's comment or docstring suggests."""
    import re

    found: set[str] = set()
    for path in sorted((ROOT / "stages").glob("*/*/*.py")):
        if path.parent.name in ("skeleton", "solution"):
            found |= set(re.findall(r"python (stages/[\w.\-/]+\.py)", path.read_text(encoding="utf-8")))
    return sorted(found)


@pytest.mark.slow
@pytest.mark.parametrize("demo", _suggested_demos())
def test_every_demo_a_comment_suggests_runs(demo: str) -> None:
    """Run as written, from the repository root without PYTHONPATH (on the reference: the skeleton's raises)."""
    path = ROOT / demo.replace("/skeleton/", "/solution/")
    full = {k: v for k, v in os.environ.items() if not k.startswith("LLMFS_") and k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, str(path.relative_to(ROOT))], cwd=ROOT, env=full, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, f"`python {demo}` (solution in place) failed:\n{run.stderr[-2000:]}"
    assert run.stdout.strip()


def test_machine_dependent_blocks_are_compared_with_numbers_masked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from grader import example as ex
    from shared.registry import BY_ID

    stage = BY_ID["1.1"]
    fake = tmp_path / "stage"
    fake.mkdir()
    (fake / "README.md").write_text("<!-- example-output -->\n```\nexact 1.5\n```\n"
                                    "<!-- example-output: machine-dependent -->\n```\nspeed 0.026 TFLOP/s\n```\n")
    monkeypatch.setattr(type(stage), "folder", property(lambda self: fake))
    assert ex.mismatch("1.1", "exact 1.5\n\nspeed 0.107 TFLOP/s\n") is None
    assert "block 1" in (ex.mismatch("1.1", "exact 1.6\n\nspeed 0.107 TFLOP/s\n") or "")
    assert "block 2" in (ex.mismatch("1.1", "exact 1.5\n\nslow 0.107 TFLOP/s\n") or "")
    assert "printed 1 blocks" in (ex.mismatch("1.1", "exact 1.5\n") or "")
