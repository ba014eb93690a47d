"""The figure contract: what a stage's ``figures.py`` declares, and small drawing helpers.

A stage draws pictures of *your* code with ``nox -s show -- <stage>`` (``grader/show.py``).
Each stage that has pictures holds ``stages/<id>-<slug>/figures.py`` with a list::

    FIGURES: list[Figure] = [Figure(name, title, data, draw, ...), ...]

- ``data(module) -> dict``: runs the stage's module (yours or the reference, both loaded by
  ``shared.loader``) and returns what the picture shows, as plain values: numpy arrays, floats,
  ints, strings and lists of them. No matplotlib here. An untouched skeleton raises
  ``NotImplementedError("Task N: name")`` from inside it, and ``show`` turns that into a
  "not implemented yet (Task N: name)" panel.
- ``draw(panel, data)``: draws that data into ``panel``, a ``matplotlib.figure.SubFigure``
  (make axes with ``panel.subplots(...)``). ``show`` calls it once for your data and once for
  the reference's, side by side (``stack="h"``) or one above the other (``stack="v"``).

The lesson's committed images (``stages/<id>/figures/<name>.png``) are drawn from the
reference's data; ``figures.json`` beside them holds a hash of that data (``data_hash``), so a
course test can tell when an image is out of date without comparing pixels.

No matplotlib and no torch are imported by this module; the helpers import matplotlib when called.
Grading never imports this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Figure", "data_hash", "canonical", "heatmap", "to_numpy", "native_noise_dropped"]

Data = dict[str, Any]


@dataclass(frozen=True)
class Figure:
    name: str  # file stem: "sinusoidal-table" -> sinusoidal-table.png (lowercase, digits, '-')
    title: str  # the heading above the picture
    data: Callable[[Any], Data]  # stage module -> the values the picture shows (may raise NotImplementedError)
    draw: Callable[[Any, Data], None]  # (matplotlib SubFigure, data) -> None: draws one version
    caption: str = ""  # one sentence: the image's alt text in the lesson and what to look for
    size: tuple[float, float] = (4.0, 3.0)  # inches of ONE version's panel (the reference beside it doubles it)
    stack: str = "h"  # "h": yours and the reference side by side; "v": one above the other (wide panels)
    compare: bool = True  # draw the reference beside yours (False: yours only, e.g. hardware measurements)
    lesson: bool = True  # committed under stages/<id>/figures/ (False when the data depend on the hardware)
    digits: int = 4  # significant digits the data are hashed at (fewer for trained models: CPUs differ a little)


def to_numpy(x: Any) -> Any:
    """A torch tensor (any device or dtype) -> a float64 / bool / int64 numpy array; anything else unchanged."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        t = x.detach().cpu()
        if t.dtype.is_floating_point:
            t = t.double()
        return t.numpy()
    return x


def _round(v: float, digits: int) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    s = f"{v:.{digits}g}"
    return "0" if float(s) == 0.0 else s  # -0 and 0 hash the same


def canonical(value: Any, digits: int = 4) -> Any:
    """A JSON-able form of ``value`` with every float at ``digits`` significant digits."""
    import numpy as np  # numpy only: cheap, and no torch

    if isinstance(value, dict):
        return {str(k): canonical(v, digits) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [canonical(v, digits) for v in value]
    if isinstance(value, np.ndarray):
        flat = value.ravel()
        if value.dtype.kind == "f":
            items: list[Any] = [_round(float(v), digits) for v in flat]
        elif value.dtype.kind == "b":
            items = [bool(v) for v in flat]
        else:
            items = [int(v) if value.dtype.kind in "iu" else str(v) for v in flat]
        return {"shape": list(value.shape), "values": items}
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _round(float(value), digits)
    if isinstance(value, str):
        return value
    raise TypeError(f"figure data must be arrays, numbers, strings or lists of them, not {type(value).__name__}")


def data_hash(data: Data, digits: int = 4) -> str:
    """sha256 of the canonical form of a figure's data (what figures.json records)."""
    text = json.dumps(canonical(data, digits), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def native_noise_dropped(prefixes: tuple[str, ...] = ("USDT:",)) -> Iterator[None]:
    """Capture file descriptor 2 (where C++ code logs, below ``sys.stderr``) for the duration and
    write it back without the lines starting with ``prefixes`` (torch.profiler's ``USDT: ... profiler_start``)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (an embedded interpreter): change nothing
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not line.startswith(prefixes)]  # fmt: skip
            if kept:
                sys.stderr.write("".join(kept))


# ----------------------------------------------------------------------------- drawing helpers


def heatmap(
    ax: Any,
    values: Any,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = False,
    fmt: str = "{:.2f}",
    xticks: list[str] | None = None,
    yticks: list[str] | None = None,
    colorbar: bool = False,
) -> Any:
    """``values`` (rows, cols) as an image on ``ax``; ``annotate`` writes each number in its cell.

    -inf cells (masked scores) are drawn grey and labelled "-inf". Returns the image.
    """
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    shown = np.ma.masked_invalid(arr)
    import matplotlib

    colours = matplotlib.colormaps[cmap].with_extremes(bad="#d0d0d0")  # -inf / NaN cells: grey
    image = ax.imshow(shown, cmap=colours, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if xticks is not None:
        ax.set_xticks(range(len(xticks)), xticks)
    if yticks is not None:
        ax.set_yticks(range(len(yticks)), yticks)
    if annotate:
        for (i, j), v in np.ndenumerate(arr):
            text = "-inf" if np.isneginf(v) else fmt.format(v)
            r, g, b, _ = image.cmap(image.norm(v)) if np.isfinite(v) else (1.0, 1.0, 1.0, 1.0)
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # white text on dark cells
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
    return image
