"""``nox -s example -- <stage> [--version skeleton|solution]``: re-run a lesson's worked example.

Each stage with a worked example has ``stages/<id>-<slug>/example.py`` beside its lesson. It
loads the stage through ``shared.loader`` (so ``--version`` picks your skeleton or the reference)
and prints exactly the blocks its lesson marks with ``<!-- example-output -->``; a course test
(``tests/test_examples.py``) compares the two. The same command works without nox::

    python -m grader.example 1.1 --version solution

Runs from the repository root or anywhere else (the repository is put on ``sys.path``), with one
CPU thread, as grading uses, so the printed numbers are the lesson's. Exit status: 0 the example
ran; 1 it did not (still ``NotImplementedError``: one line naming the task; any other error: one
line naming the file and line); 2 a usage error; 130 interrupted.

Helpers for the example files (pure Python, no torch): :func:`side_by_side` lays text blocks out
in columns, :func:`shell` replays an interactive session (``>>>`` prompts, echoed source and the
values' reprs), for lessons written as a Python-shell transcript.
"""

from __future__ import annotations

import argparse
import code
import os
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any

ROOT: Path = Path(__file__).resolve().parent.parent
#: The HTML comment in a lesson that marks the next fenced block as the example's printed output.
MARKER = "<!-- example-output -->"
#: The same for output that depends on the machine (timings): compared with every number masked.
MARKER_MACHINE = "<!-- example-output: machine-dependent -->"
_MARKERS = (MARKER, MARKER_MACHINE)


class _Usage(Exception):
    """A usage error: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[no-untyped-def]
        raise _Usage(f"{message} (usage: nox -s example -- <stage> [--version skeleton|solution])")


def example_path(stage_id: str) -> Path:
    from shared.registry import BY_ID

    return BY_ID[stage_id].folder / "example.py"


def stages_with_examples() -> list[str]:
    from shared.registry import STAGES

    return [s.id for s in STAGES if (s.folder / "example.py").is_file()]


def lesson_blocks(lesson: str) -> list[str]:
    """The fenced blocks that follow a ``<!-- example-output -->`` line in ``lesson``, without their fences."""
    return [text for text, _ in marked_blocks(lesson)]


def marked_blocks(lesson: str) -> list[tuple[str, bool]]:
    """(block text, machine-dependent?) for every marked block of ``lesson``, in order."""
    lines = lesson.splitlines()
    blocks: list[tuple[str, bool]] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() in _MARKERS:
            machine = lines[i].strip() == MARKER_MACHINE
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and lines[j].lstrip().startswith("```"):
                k = j + 1
                while k < len(lines) and not lines[k].lstrip().startswith("```"):
                    k += 1
                blocks.append(("\n".join(lines[j + 1 : k]), machine))
                i = k
        i += 1
    return blocks


def update_lesson(stage_id: str, printed: str) -> str:
    """Replace the lesson's marked blocks by ``printed`` (split at blank lines: one part per marked block).
    For maintainers, after changing an example: ``python -m grader.example <id> --version solution --update-lesson``."""
    from shared.registry import BY_ID

    path = BY_ID[stage_id].folder / "README.md"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    parts = printed.rstrip("\n").split("\n\n")
    spans = []  # (first line inside the fence, the closing fence's line)
    i = 0
    while i < len(lines):
        if lines[i].strip() in _MARKERS:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            k = j + 1
            while k < len(lines) and not lines[k].lstrip().startswith("```"):
                k += 1
            spans.append((j + 1, k))
            i = k
        i += 1
    if len(spans) != len(parts):
        raise _Usage(f"the example printed {len(parts)} blocks (split at blank lines) but {path.name} marks"
                     f" {len(spans)}: mark one block per printed block")  # fmt: skip
    for (start, end), part in reversed(list(zip(spans, parts, strict=True))):
        lines[start:end] = [ln + "\n" for ln in part.split("\n")]
    text = "".join(lines)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return str(path.relative_to(ROOT))


def _masked(text: str) -> str:
    import re

    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", text)


def mismatch(stage_id: str, printed: str) -> str | None:
    """None when ``printed`` is what the lesson shows (machine-dependent blocks compared with their
    numbers masked); otherwise a description of the first difference."""
    from shared.registry import BY_ID

    blocks = marked_blocks((BY_ID[stage_id].folder / "README.md").read_text(encoding="utf-8"))
    parts = printed.rstrip("\n").split("\n\n")
    if len(parts) != len(blocks):
        return f"the example printed {len(parts)} blocks (split at blank lines), the lesson marks {len(blocks)}"
    for n, ((want, machine), got) in enumerate(zip(blocks, parts, strict=True)):
        if (machine and _masked(want) != _masked(got)) or (not machine and want != got):
            kind = " (machine-dependent: numbers masked)" if machine else ""
            return f"block {n + 1}{kind} differs:\n--- the lesson shows:\n{want}\n--- the example printed:\n{got}"
    return None


def expected_output(stage_id: str) -> str:
    """What ``nox -s example -- <stage>`` must print: the lesson's marked blocks, a blank line between them."""
    from shared.registry import BY_ID

    lesson = (BY_ID[stage_id].folder / "README.md").read_text(encoding="utf-8")
    return "\n\n".join(lesson_blocks(lesson)) + "\n"


# ----------------------------------------------------------------------------- helpers for example files


def side_by_side(*blocks: str, gap: int = 4) -> str:
    """Text blocks in columns: each block padded to its widest line, ``gap`` spaces between; trailing spaces dropped."""
    split = [b.splitlines() for b in blocks]
    widths = [max((len(ln) for ln in lines), default=0) for lines in split]
    height = max((len(lines) for lines in split), default=0)
    rows = []
    for r in range(height):
        cells = [(lines[r] if r < len(lines) else "").ljust(w) for lines, w in zip(split, widths, strict=True)]
        rows.append((" " * gap).join(cells).rstrip())
    return "\n".join(rows)


def shell(source: str, namespace: dict[str, Any] | None = None) -> None:
    """Replay ``source`` as an interactive Python session: each statement echoed after ``>>>`` / ``...``
    (comments kept), then what the interpreter would show (the repr of an expression's value, or what it printed)."""
    ns: dict[str, Any] = namespace if namespace is not None else {"__name__": "__example__"}
    lines = source.strip("\n").splitlines()
    i = 0
    while i < len(lines):
        j = i + 1
        while True:
            chunk = "\n".join(lines[i:j])
            compiled = code.compile_command(_strip_comments(chunk) or "pass", "<example>", "single")
            if compiled is not None or j >= len(lines):
                break
            j += 1
        for n, ln in enumerate(lines[i:j]):
            print(("... " if n else ">>> ") + ln)
        if compiled is None:
            raise SyntaxError(f"incomplete statement in the example: {chunk!r}")
        saved = sys.displayhook
        sys.displayhook = _display
        try:
            exec(compiled, ns)
        finally:
            sys.displayhook = saved
        i = j


def _display(value: Any) -> None:
    if value is not None:
        print(repr(value))


def _strip_comments(chunk: str) -> str:
    """compile_command treats a comment-only line as incomplete; the chunk's code is what decides."""
    return chunk if any(ln.strip() and not ln.strip().startswith("#") for ln in chunk.splitlines()) else ""


# ----------------------------------------------------------------------------- running one


def _where(exc: BaseException, path: Path) -> str:
    """' (skeleton/positional.py line 12)' for the innermost frame inside the stage's folder."""
    stage_dir = path.parent.resolve()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        f = Path(frame.filename)
        try:
            rel = f.resolve().relative_to(stage_dir)
        except (ValueError, OSError):
            continue
        return f" ({rel.as_posix()} line {frame.lineno})"
    return ""


def run_example(stage_id: str, version: str) -> int:
    """Run one stage's example in this process; 0, or 1 with one line on stderr."""
    path = example_path(stage_id)
    if not path.is_file():
        with_one = ", ".join(stages_with_examples())
        sys.stderr.write(f"example: stage {stage_id} has no worked example to run (stages with one: {with_one})\n")
        return 1
    tag = f"example {stage_id} ({version})"
    try:
        runpy.run_path(str(path), run_name="__main__")
    except NotImplementedError as exc:
        sys.stdout.flush()
        task = str(exc) or "a task"
        hint = (f"; see the reference with `nox -s example -- {stage_id} --version solution`" if version == "skeleton" else "")
        sys.stderr.write(f"{tag}: not implemented yet — {task}{hint}\n")
        return 1
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:
        sys.stdout.flush()
        sys.stderr.write(f"{tag}: the code called sys.exit({exc.code!r})\n")
        return 1
    except BaseException as exc:  # the learner's code failed: one line, no traceback
        sys.stdout.flush()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        sys.stderr.write(f"{tag} failed: {type(exc).__name__}: {first}{_where(exc, path)}\n")
        return 1
    finally:
        sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == here:  # run as a script: grader/ must not shadow
        sys.path.pop(0)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from shared.registry import UnknownStage, select

    p = _Parser(prog="nox -s example --", description="Re-run a lesson's worked example.")
    p.add_argument("stage", help="a stage id (1.1), or a prefix (1.5)")
    p.add_argument("--version", choices=("skeleton", "solution"), default="skeleton",
                   help="skeleton (your work, the default) or solution (the reference)")  # fmt: skip
    p.add_argument("--update-lesson", action="store_true", help=argparse.SUPPRESS)  # maintainers: paste the output
    try:
        args = p.parse_args(argv)
        try:
            stages = select([args.stage])
        except UnknownStage:
            raise _Usage(f"unknown stage {args.stage!r}; stages with a worked example: {', '.join(stages_with_examples())}") from None
        if args.stage == "all" or not stages:
            raise _Usage(f"name one stage, e.g. `nox -s example -- 1.1` (stages with an example: {', '.join(stages_with_examples())})")
    except _Usage as exc:
        sys.stderr.write(f"example: {exc}\n")
        return 2
    os.environ["LLMFS_VERSION"] = args.version
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as grading: the lesson's numbers were printed this way
    try:
        import torch

        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    except (ImportError, ValueError):
        pass
    try:
        if args.update_lesson:
            return _update(stages, args.version)
        code_ = 0
        for n, s in enumerate(stages):
            if n:
                print()
            code_ = max(code_, run_example(s.id, args.version))
        return code_
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.stderr.write("example: interrupted\n")
        return 130


def _update(stages: list[Any], version: str) -> int:
    import contextlib
    import io

    for s in stages:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code_ = run_example(s.id, version)
        if code_:
            return code_
        try:
            print(f"updated {update_lesson(s.id, buf.getvalue())}")
        except _Usage as exc:
            sys.stderr.write(f"example: {exc}\n")
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
