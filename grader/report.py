"""Rendering results with rich: a table per stage, the hints, the total. No torch.

On a terminal the tables are coloured; anywhere else (a file, CI, an autograder) the
same report comes out as plain ASCII text.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from grader.results import CheckResult, StageResult, cap

STYLE = {
    "passed": "green",
    "failed": "red",
    "not implemented": "yellow",
    "skipped": "dim",
    "timed out": "magenta",
    "crashed": "bold red",
    "pending": "red",
}
MARK = {"passed": "ok", "failed": "x", "not implemented": "todo", "skipped": "-", "timed out": "time", "crashed": "!!"}


def make_console(file: Any = None) -> Console:
    stream = file or sys.stdout
    is_tty = bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ
    return Console(
        file=stream, highlight=False, soft_wrap=True, no_color=not is_tty, force_terminal=is_tty or None,
        width=None if is_tty else 120, emoji=False,
    )  # fmt: skip


def wrap_words(line: str, width: int) -> list[str]:
    """``line`` broken at spaces into pieces of at most ``width`` characters (a longer word stays whole);
    continuation pieces are indented like the line, plus two. Lines that fit are returned as they are."""
    if len(line) <= width or width < 20:
        return [line]
    indent = " " * (len(line) - len(line.lstrip(" ")) + 2)
    return textwrap.wrap(line, width=width, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False, replace_whitespace=False) or [line]  # fmt: skip


def table_box(console: Console) -> box.Box:
    return box.ROUNDED if console.is_terminal else box.ASCII


def _points(p: float) -> str:
    return f"{p:g}"


def environment_line(env: dict[str, Any] | None) -> str:
    if not env:
        return "Environment: unknown (the checks did not report it)"
    if env.get("error"):
        return f"Environment: could not be read ({env['error']})"
    devices = env.get("devices") if isinstance(env.get("devices"), dict) else {}
    parts = []
    for dev in ("cpu", "cuda", "mps"):
        if dev in devices:
            dts = "/".join(str(d).replace("bfloat16", "bf16").replace("float16", "fp16") for d in devices[dev] or [])
            name = f" {env.get('cuda_name')}" if dev == "cuda" and env.get("cuda_name") else ""
            parts.append(f"{dev}{name} (autocast {dts})")
        else:
            parts.append(f"{dev}: absent")
    build = f"CUDA {env['cuda_build']} build" if env.get("cuda_build") else "CPU-only build"
    return f"Environment: torch {env.get('torch')} ({build}); " + "; ".join(parts)


def _hint_text(c: CheckResult, verbose: bool) -> str:
    lines = cap(c.hint).strip().splitlines() or [c.status]
    if not verbose and len(lines) > 14:
        lines = lines[:14] + [f"... ({len(lines) - 14} more lines; --verbose shows them)"]
    return "\n".join(lines)


def _base_name(c: CheckResult) -> str:
    """A matrix check's name without its cell (``... [cpu-bf16]`` -> ``...``)."""
    suffix = f" [{c.cell}]"
    return c.name[: -len(suffix)] if c.cell and c.name.endswith(suffix) else c.name


_WORST = ("crashed", "timed out", "failed", "pending", "not implemented", "passed")


def fold_cells(checks: Sequence[CheckResult]) -> list[tuple[str, str, float, float, list[CheckResult]]]:
    """Rows of the table: one per check, the device-matrix cells of a check folded into its row.

    Each row is (name, status, points, max points, the checks it stands for); the row's status is
    the worst of its cells', and its name lists the cells that did not pass.
    """
    rows: list[tuple[str, str, float, float, list[CheckResult]]] = []
    groups: dict[str, list[CheckResult]] = {}
    order: list[str] = []
    for c in checks:
        key = f"{c.nodeid.split('[')[0]}::{_base_name(c)}" if c.cell else c.nodeid
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(c)
    for key in order:
        cs = groups[key]
        if len(cs) == 1:
            c = cs[0]
            rows.append((c.name, c.status, c.points, c.max_points, cs))
            continue
        status = next((st for st in _WORST if any(c.status == st for c in cs)), cs[0].status)
        cells = [c.cell for c in cs]
        bad = [c.cell for c in cs if c.status != "passed"]
        label = f"{_base_name(cs[0])} [{', '.join(cells)}]" if not bad or len(bad) == len(cs) else f"{_base_name(cs[0])} [{', '.join(cells)}; not passed on {', '.join(bad)}]"
        rows.append((label, status, sum(c.points for c in cs), sum(c.max_points for c in cs), cs))
    return rows


def stage_table(console: Console, r: StageResult, verbose: bool) -> None:
    title = f"Stage {r.id} - {r.title}"
    if r.tests_modified:
        title += "  [course tests modified: unofficial result]"
    table = Table(title=escape(title), title_justify="left", box=table_box(console), show_lines=False, expand=False)
    table.add_column("check", overflow="fold", max_width=90)
    table.add_column("status", no_wrap=True)
    table.add_column("points", justify="right", no_wrap=True)
    if verbose:
        table.add_column("time", justify="right", no_wrap=True)
    skipped = [c for c in r.checks if c.status == "skipped"]
    if verbose:  # every cell on its own row
        for c in r.checks:
            status = c.status if c.status != "skipped" else f"skipped: {c.hint}"
            points = f"{_points(c.points)}/{_points(c.max_points)}" if c.graded else "-"
            table.add_row(Text(c.name), Text(status, style=STYLE.get(c.status, "")), Text(points), Text(f"{c.duration:.2f}s"))
    else:
        for name, status, pts, mx, _ in fold_cells([c for c in r.checks if c.status != "skipped"]):
            table.add_row(Text(name), Text(status, style=STYLE.get(status, "")), Text(f"{_points(pts)}/{_points(mx)}"))
    console.print(table)
    if skipped and not verbose:
        reasons = Counter(c.hint or "skipped" for c in skipped)
        why = ", ".join(f"{reason} ({n})" for reason, n in reasons.items())
        console.print(Text(f"  {len(skipped)} check(s) skipped, not counted: {why}. (--verbose lists them)"))


def stage_hints(console: Console, r: StageResult, verbose: bool) -> None:
    if r.error:
        console.print(Text(f"  Stage {r.id} could not be graded: {r.error}", style="bold red"))
    todo = [c for c in r.checks if c.status == "not implemented"]
    bad = [c for c in r.checks if c.status in ("failed", "timed out", "crashed", "pending")]
    if todo:
        tasks: list[str] = []
        for c in todo:
            t = c.hint.removeprefix("not implemented yet").strip(" ()") or c.name
            if t not in tasks:
                tasks.append(t)
        console.print(Text("  Not implemented yet: " + "; ".join(tasks), style="yellow"))
    # One root cause, one message: checks that failed with the same hint (an import error, the cells
    # of one matrix check) are listed together under it.
    groups: dict[tuple[str, str], list[CheckResult]] = {}
    for c in bad:
        groups.setdefault((c.status, c.hint.strip()), []).append(c)
    graded = [c for c in r.checks if c.graded]
    for (status, _), cs in groups.items():
        names: list[str] = []
        for c in cs:
            n = _base_name(c)
            if n not in names:
                names.append(n)
        if len(cs) == 1:
            head = cs[0].name
        elif len(cs) == len(graded) and len(cs) > 2:
            head = f"every check of stage {r.id} ({len(cs)})"
        elif len(names) == 1:
            head = f"{names[0]} [{', '.join(c.cell for c in cs)}]"
        else:
            head = f"{len(cs)} checks: " + "; ".join(names[:6]) + (f"; ... ({len(names) - 6} more)" if len(names) > 6 else "")
        console.print(Text(f"  [{MARK.get(status, status)}] {head}", style=STYLE.get(status, "")))
        for line in _hint_text(cs[0], verbose).splitlines():
            for part in wrap_words(line, console.width - 6):
                console.print(Text("      " + part))
        if verbose:
            for c in cs:
                console.print(Text(f"      ({c.nodeid})", style="dim"))


def stage_summary(r: StageResult) -> str:
    counts = ", ".join(f"{r.count(s)} {s}" for s in ("passed", "failed", "not implemented", "timed out", "crashed") if r.count(s))
    skipped = r.count("skipped")
    if skipped:
        counts += f" ({skipped} skipped)"
    return f"Stage {r.id}: {_points(r.points)}/{_points(r.max_points)} points - {counts or 'no checks'}"


def print_report(
    console: Console,
    results: Sequence[StageResult],
    env: dict[str, Any] | None,
    *,
    version: str,
    deps: str,
    verbose: bool,
    warnings: Sequence[str] = (),
) -> None:
    console.print(Text(environment_line(env)))
    console.print(Text(f"Grading: {version} (earlier stages: {'your own' if deps == 'mine' else 'reference'} versions)"))
    for w in warnings:
        console.print(Text(f"Warning: {w}", style="yellow"))
    for r in results:
        console.print()
        stage_table(console, r, verbose)
        stage_hints(console, r, verbose)
        console.print(Text(stage_summary(r), style="green" if r.passed else "red"))
    total = sum(r.points for r in results)
    maximum = sum(r.max_points for r in results)
    done = sum(1 for r in results if r.passed)
    console.print()
    verdict = "all checks passed" if done == len(results) else f"{done} of {len(results)} stage(s) fully passed"
    console.print(Text(f"Total: {_points(total)}/{_points(maximum)} points; {verdict}.", style="bold green" if done == len(results) else "bold"))
