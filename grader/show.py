"""``nox -s show -- <stage>... [--version skeleton|solution] [--out DIR] [--open]``: pictures of your code.

For each stage it runs the figures declared in ``stages/<id>/figures.py`` (the contract is in
``shared/figures.py`` and in ``stages/AUTHORING.md``, "Figures") on *your* version of the stage,
loaded by ``shared.loader`` exactly as the grader loads it, and draws the reference's beside
it. PNGs go to ``.llmfs/figures/<stage>/`` (or ``--out DIR/<stage>/``); their paths are printed.
A part you have not written yet is drawn as a "not implemented yet (Task N: name)" panel.

Maintainers::

    python -m grader.show all --update-lessons   # redraw the lessons' images, stages/<id>/figures/
    python -m grader.show all --check-lessons    # exit 1 if any is out of date (a course test does this)

matplotlib (Agg backend, no display needed) is imported here only: grading never imports this module.
Exit status: 0 figures written (a not-implemented or failing part of yours is drawn, not an error);
1 a reference figure could not be drawn, or lesson images are out of date; 2 usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from shared.registry import ROOT, STAGES, VERSIONS, Stage, UnknownStage, select

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_OUT = ROOT / ".llmfs" / "figures"
SHOW_DPI = 100  # what `show` writes for you
LESSON_DPI = 80  # the committed lesson images: small files (tens of kB)
DATA_TIMEOUT = 60  # seconds one figure's data may take from your code before it is abandoned
LESSON_INDEX = "figures.json"


class UsageError(Exception):
    """Bad command-line input; the message is one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `nox -s show -- --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nox -s show --",
        description="Draw each stage's figures from your code (or the reference), with the reference beside it.",
        epilog=f"Stages: {', '.join(s.id for s in STAGES)}; a prefix (1.5 -> 1.5a and 1.5b) or 'all'.",
    )
    p.add_argument("stages", nargs="+", metavar="STAGE", help="stage id, prefix or 'all'")
    p.add_argument(
        "--version", choices=VERSIONS, default="skeleton", help="what to draw (default: skeleton, your work)"
    )
    p.add_argument(
        "--out", metavar="DIR", type=Path, help=f"write DIR/<stage>/*.png (default: {DEFAULT_OUT.relative_to(ROOT)})"
    )
    p.add_argument("--open", action="store_true", help="open the images with the system's viewer")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--update-lessons", action="store_true",
        help="maintainers: redraw the lessons' images (stages/<id>/figures/) from the reference",
    )  # fmt: skip
    group.add_argument(
        "--check-lessons", action="store_true", help="maintainers: exit 1 if a lesson image is out of date"
    )
    return p


# ----------------------------------------------------------------------------- the stage's figure list


class FiguresError(Exception):
    """A stage's figures.py is broken (a maintainer's bug): one line."""


def figures_path(stage: Stage) -> Path:
    return stage.folder / "figures.py"


def lesson_dir(stage: Stage) -> Path:
    return stage.folder / "figures"


def load_figures(stage: Stage) -> list[Any] | None:
    """The stage's ``FIGURES`` list, or None when the stage has no figures.py."""
    path = figures_path(stage)
    if not path.is_file():
        return None
    name = f"llmfs_figures_{stage.id.replace('.', '_')}"
    if name in sys.modules:
        return list(sys.modules[name].FIGURES)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        figures = list(module.FIGURES)
    except Exception as exc:
        raise FiguresError(
            f"stage {stage.id}: {path.relative_to(ROOT)} is broken: {type(exc).__name__}: {exc}"
        ) from None
    sys.modules[name] = module
    return figures


# ----------------------------------------------------------------------------- running the data functions


@dataclass
class Problem:
    """Why a panel has no picture: one line, shown in the panel and printed."""

    text: str
    not_implemented: bool = False


class _DataTimeout(BaseException):  # not an Exception: a learner's `except Exception` cannot swallow it
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _DataTimeout()


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    """Abandon a data function that runs past ``seconds`` (POSIX main thread; elsewhere no limit)."""
    if not hasattr(signal, "SIGALRM") or seconds <= 0:
        yield
        return
    try:
        old = signal.signal(signal.SIGALRM, _on_alarm)
    except ValueError:  # not the main thread
        yield
        return
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _where(exc: BaseException) -> str:
    """' (attention_head.py line 12)': the innermost frame in a stage's skeleton/solution file, if any."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        p = Path(frame.filename)
        if p.parent.name in ("skeleton", "solution") or "LLMFS_IMPL" in frame.filename:
            return f" ({p.name} line {frame.lineno})"
    return ""


def describe(exc: BaseException) -> Problem:
    """One line for an exception raised by a stage's code."""
    if isinstance(exc, NotImplementedError):
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Problem(f"not implemented yet ({msg})" if msg else "not implemented yet", not_implemented=True)
    if isinstance(exc, _DataTimeout):
        return Problem(f"took longer than {DATA_TIMEOUT} s: an endless loop, or far too much work")
    msg = " ".join(str(exc).split())
    if len(msg) > 160:
        msg = msg[:157] + "..."
    return Problem(
        f"raised {type(exc).__name__}{_where(exc)}: {msg}" if msg else f"raised {type(exc).__name__}{_where(exc)}"
    )


def compute(figure: Any, module: ModuleType | Problem) -> dict[str, Any] | Problem:
    """``figure.data(module)``, or the Problem that stopped it. Never raises (except Ctrl-C)."""
    if isinstance(module, Problem):
        return module
    try:
        with _time_limit(DATA_TIMEOUT):
            data = figure.data(module)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the learner's code: SystemExit and friends are drawn, not obeyed
        return describe(exc)
    if not isinstance(data, dict):
        return Problem(f"figure data must be a dict, got {type(data).__name__}")
    return data


def _load_module(stage: Stage, reference: bool) -> ModuleType | Problem:
    """The stage's module through shared.loader, as the grader loads it: yours (``load``) or the reference."""
    from shared.loader import LearnerCodeError, load, load_dep

    try:
        return load_dep(stage.id) if reference else load(stage.id)  # main() makes load_dep the reference
    except LearnerCodeError as exc:
        return Problem(" ".join(str(exc).split()))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return describe(exc)


def _select_version(version: str) -> None:
    """LLMFS_VERSION from --version, LLMFS_DEPS=solution: what shared.loader reads (once, when first imported)."""
    os.environ["LLMFS_VERSION"] = version
    os.environ["LLMFS_DEPS"] = "solution"  # load_dep(stage) is then the reference, never an override
    loader = sys.modules.get("shared.loader")
    if loader is not None:  # imported already in this process (nox running another session first)
        loader._SETTINGS.update(version=version, deps="solution")


# ----------------------------------------------------------------------------- drawing


def _problem_panel(panel: Any, problem: Problem) -> None:
    for ax in list(panel.axes):
        ax.remove()
    ax = panel.subplots()
    ax.set_axis_off()
    colour = "#7a5c00" if problem.not_implemented else "#a00000"
    ax.text(0.5, 0.5, _wrap(problem.text, 44), ha="center", va="center", fontsize=9, color=colour,
            transform=ax.transAxes, bbox={"boxstyle": "round", "facecolor": "#f6f6f6", "edgecolor": colour})  # fmt: skip


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def render(figure: Any, panels: list[tuple[str, dict[str, Any] | Problem]], dpi: int) -> tuple[bytes, list[str]]:
    """Draw ``panels`` (label, data or Problem) of one figure; returns (PNG bytes, problems while drawing)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    n = len(panels)
    w, h = figure.size
    vertical = figure.stack == "v"
    size = (w, h * n + 0.3) if vertical else (w * n, h + 0.3)
    canvas = MplFigure(figsize=size, dpi=dpi, layout="constrained")
    FigureCanvasAgg(canvas)
    subs = canvas.subfigures(n, 1, squeeze=False) if vertical else canvas.subfigures(1, n, squeeze=False)
    canvas.suptitle(figure.title, fontsize=10, fontweight="bold")
    drawing_problems: list[str] = []
    for sub, (label, data) in zip(subs.ravel(), panels, strict=True):
        if label:
            sub.suptitle(label, fontsize=9)
        if isinstance(data, Problem):
            _problem_panel(sub, data)
            continue
        try:
            figure.draw(sub, data)
        except Exception as exc:  # e.g. your data came back with a shape the picture cannot show
            problem = Problem(f"could not draw this data: {type(exc).__name__}: {' '.join(str(exc).split())[:140]}")
            drawing_problems.append(f"{label or 'reference'}: {problem.text}")
            _problem_panel(sub, problem)
    buf = io.BytesIO()
    canvas.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue(), drawing_problems


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a part."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; an image is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- the commands


def _rel(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if rel.startswith("..") else rel


def show_stage(stage: Stage, version: str, out_dir: Path) -> tuple[list[Path], bool]:
    """Draw one stage's figures into ``out_dir``; print one line per figure. Returns (paths, reference ok)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    figures = load_figures(stage)
    if figures is None:
        print(f"stage {stage.id}: no figures yet")
        return [], True
    print(f"stage {stage.id} ({version}):", flush=True)
    yours = _load_module(stage, reference=False)
    reference: ModuleType | Problem | None = None
    paths: list[Path] = []
    ok = True
    for figure in figures:
        mine = compute(figure, yours)
        panels: list[tuple[str, dict[str, Any] | Problem]]
        if version == "solution":
            panels = [("reference (solution)" if figure.compare else "", mine)]
            if isinstance(mine, Problem):
                ok = False
        elif figure.compare:
            if reference is None:
                reference = _load_module(stage, reference=True)
            ref = compute(figure, reference)
            if isinstance(ref, Problem):
                ok = False
            panels = [("yours (skeleton)", mine), ("reference (solution)", ref)]
        else:
            panels = [("yours (skeleton)", mine)]
        png, drawing_problems = render(figure, panels, SHOW_DPI)
        if any(not text.startswith("yours") for text in drawing_problems):
            ok = False  # the reference's data could not be drawn: a bug in figures.py
        path = out_dir / f"{figure.name}.png"
        write_bytes_atomic(path, png)
        paths.append(path)
        note = ""
        if isinstance(mine, Problem):
            note = f"  - yours: {mine.text}" if version == "skeleton" else f"  - {mine.text}"
        elif drawing_problems:
            note = f"  - {drawing_problems[0]}"
        print(f"  {_rel(path)}{note}", flush=True)  # as each is written: 1.6 trains for a few seconds first
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"  {len(paths)} figure{'s' * (len(paths) != 1)} in {seconds:.1f} s ({cpu:.1f} s of CPU)")
    return paths, ok


def lesson_data(stage: Stage) -> list[tuple[Any, dict[str, Any] | Problem]]:
    """(figure, reference data) for each of the stage's lesson figures."""
    figures = load_figures(stage) or []
    chosen = [f for f in figures if f.lesson]
    if not chosen:
        return []
    reference = _load_module(stage, reference=True)
    return [(f, compute(f, reference)) for f in chosen]


def read_index(stage: Stage) -> dict[str, Any]:
    try:
        data = json.loads((lesson_dir(stage) / LESSON_INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stale_lesson_figures(stage: Stage) -> list[str]:
    """What is out of date in stages/<id>/figures/: one line per image (empty: all up to date)."""
    from shared.figures import data_hash

    index = read_index(stage)
    stale: list[str] = []
    wanted = lesson_data(stage)
    for figure, data in wanted:
        png = lesson_dir(stage) / f"{figure.name}.png"
        entry = index.get(figure.name)
        if isinstance(data, Problem):
            stale.append(f"{figure.name}: the reference's data could not be computed: {data.text}")
        elif not png.is_file():
            stale.append(f"{figure.name}: {_rel(png)} is missing")
        elif not isinstance(entry, dict) or entry.get("data_hash") != data_hash(data, figure.digits):
            stale.append(f"{figure.name}: the data it is drawn from changed")
    extra = set(index) - {f.name for f, _ in wanted}
    stale.extend(f"{name}: in {LESSON_INDEX} but no longer a lesson figure" for name in sorted(extra))
    return stale


def update_lessons(stage: Stage) -> bool:
    """Redraw stages/<id>/figures/ from the reference and record each figure's data hash."""
    from shared.figures import data_hash

    start = time.perf_counter()
    wanted = lesson_data(stage)
    folder = lesson_dir(stage)
    old = read_index(stage)
    if not wanted:
        if old or folder.is_dir():
            for name in old:
                with contextlib.suppress(OSError):
                    (folder / f"{name}.png").unlink()
            with contextlib.suppress(OSError):
                (folder / LESSON_INDEX).unlink()
        print(f"stage {stage.id}: no lesson figures")
        return True
    index: dict[str, Any] = {}
    ok = True
    lines = []
    for figure, data in wanted:
        if isinstance(data, Problem):
            print(f"stage {stage.id}: {figure.name}: the reference failed: {data.text}")
            ok = False
            continue
        png, problems = render(figure, [("", data)], LESSON_DPI)
        if problems:
            print(f"stage {stage.id}: {figure.name}: {problems[0]}")
            ok = False
            continue
        path = folder / f"{figure.name}.png"
        write_bytes_atomic(path, png)
        index[figure.name] = {"data_hash": data_hash(data, figure.digits), "digits": figure.digits,
                              "title": figure.title, "caption": figure.caption}  # fmt: skip
        lines.append(f"  {_rel(path)}  ({len(png) // 1024} kB)")
    for name in set(old) - set(index):
        with contextlib.suppress(OSError):
            (folder / f"{name}.png").unlink()
    write_bytes_atomic(folder / LESSON_INDEX, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    print(
        f"stage {stage.id}: {len(index)} lesson figure{'s' * (len(index) != 1)} in {time.perf_counter() - start:.1f} s"
    )
    for line in lines:
        print(line)
    return ok


def open_files(paths: list[Path]) -> None:
    """Open each image with the system's viewer; one line if there is none."""
    if not paths:
        return
    if sys.platform.startswith("win"):
        for p in paths:
            os.startfile(p)  # type: ignore[attr-defined]  # noqa: S606
        return
    viewer = "open" if sys.platform == "darwin" else "xdg-open"
    if shutil.which(viewer) is None:
        print(f"--open: no image viewer found ({viewer} is not installed); open the files above yourself")
        return
    for p in paths:
        subprocess.Popen([viewer, str(p)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # noqa: S603


def main(argv: Sequence[str]) -> int:
    try:
        args = build_parser().parse_args(list(argv))
        stages = select(args.stages)
    except UsageError as exc:
        print(f"show: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UnknownStage as exc:
        print(f"show: unknown stage {str(exc)!r}; stages are {', '.join(s.id for s in STAGES)} (or a prefix, or 'all')",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        print(f"show: --out {args.out} is a file, not a folder", file=sys.stderr)
        return EXIT_USAGE
    version = "solution" if (args.update_lessons or args.check_lessons) else args.version
    _select_version(version)  # the same loading as the grader's
    import logging

    for noisy in ("matplotlib", "PIL"):  # under nox the root logger is at DEBUG: keep their chatter out
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        import matplotlib
    except ImportError:
        print("show: matplotlib is not installed; `pip install -r requirements.txt` installs it", file=sys.stderr)
        return EXIT_FAILED
    matplotlib.use("Agg")  # no display needed: works headless and over SSH
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401  # once, up front: the per-stage times below are the stages' own work
    ok = True
    try:
        if args.check_lessons:
            for stage in stages:
                for line in stale_lesson_figures(stage):
                    print(f"stage {stage.id}: {line}")
                    ok = False
            if ok:
                print("lesson figures are up to date")
            else:
                print("redraw them with `python -m grader.show all --update-lessons`")
            return EXIT_OK if ok else EXIT_FAILED
        if args.update_lessons:
            for stage in stages:
                ok = update_lessons(stage) and ok
            return EXIT_OK if ok else EXIT_FAILED
        out_root = args.out if args.out is not None else DEFAULT_OUT
        written: list[Path] = []
        for stage in stages:
            paths, stage_ok = show_stage(stage, version, out_root / stage.id)
            written += paths
            ok = ok and stage_ok
        if args.open:
            open_files(written)
    except KeyboardInterrupt:
        print("show: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FiguresError as exc:
        print(f"show: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"show: could not write the images: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not ok:
        print("show: a reference figure could not be drawn (a course bug: please report it)", file=sys.stderr)
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
