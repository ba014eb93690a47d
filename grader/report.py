"""Rendering results with rich: a table per stage, the hints, the total. No torch.

On a terminal the tables are coloured; anywhere else (a file, CI, an autograder) the
same report comes out as plain ASCII text.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from grader.results import CheckResult, StageResult

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


def table_box(console: Console) -> box.Box:
    return box.ROUNDED if console.is_terminal else box.ASCII


def _points(p: float) -> str:
    return f"{p:g}"


def environment_line(env: dict[str, Any] | None) -> str:
    if not env:
        return "Environment: unknown (the checks did not report it)"
    if env.get("error"):
        return f"Environment: could not be read ({env['error']})"
    devices = env.get("devices", {})
    parts = []
    for dev in ("cpu", "cuda", "mps"):
        if dev in devices:
            dts = "/".join(d.replace("bfloat16", "bf16").replace("float16", "fp16") for d in devices[dev])
            name = f" {env.get('cuda_name')}" if dev == "cuda" and env.get("cuda_name") else ""
            parts.append(f"{dev}{name} (autocast {dts})")
        else:
            parts.append(f"{dev}: absent")
    build = f"CUDA {env['cuda_build']} build" if env.get("cuda_build") else "CPU-only build"
    return f"Environment: torch {env.get('torch')} ({build}); " + "; ".join(parts)


def _hint_text(c: CheckResult, verbose: bool) -> str:
    lines = c.hint.strip().splitlines() or [c.status]
    if not verbose and len(lines) > 14:
        lines = lines[:14] + [f"... ({len(lines) - 14} more lines; --verbose shows them)"]
    return "\n".join(lines)


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
    for c in r.checks:
        if c.status == "skipped" and not verbose:
            continue
        status = c.status if c.status != "skipped" else f"skipped: {c.hint}"
        cells = [Text(c.name), Text(status, style=STYLE.get(c.status, "")), f"{_points(c.points)}/{_points(c.max_points)}" if c.graded else "-"]
        if verbose:
            cells.append(f"{c.duration:.2f}s")
        table.add_row(*cells)
    console.print(table)
    if skipped and not verbose:
        reasons = Counter(c.hint or "skipped" for c in skipped)
        why = ", ".join(f"{reason} ({n})" for reason, n in reasons.items())
        console.print(f"  {len(skipped)} check(s) skipped, not counted: {why}. (--verbose lists them)")


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
    for c in bad:
        console.print(Text(f"  [{MARK.get(c.status, c.status)}] {c.name}", style=STYLE.get(c.status, "")))
        for line in _hint_text(c, verbose).splitlines():
            console.print(Text("      " + line))
        if verbose:
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
    console.print(environment_line(env))
    console.print(f"Grading: {version} (earlier stages: {'your own' if deps == 'mine' else 'reference'} versions)")
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
