"""Test helpers whose failure messages teach (DESIGN §5).

A failing check says what was expected, what came back (shapes, dtypes, a few
values, the largest difference) and, where it can, which common mistake produces
exactly that output. The mistake is recognised by *computing* the mistaken output
and comparing, never by guessing::

    check_close(
        got, expected, what="attention output",
        reference="torch.nn.functional.scaled_dot_product_attention",
        mistakes={"scaled by d_k instead of sqrt(d_k)": wrong_scale_output},
    )

Helpers raise ``AssertionError`` with the whole message (no pytest assertion
rewriting noise), and let ``NotImplementedError`` from the learner's code pass
through untouched so that the grader reports "not implemented".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from shared.hints import DIAGNOSED, MATCHED, encode

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "GradingError",
    "as_numpy",
    "check",
    "check_close",
    "check_shape",
    "covers",
    "declare_parts",
    "depends_on",
    "describe",
    "expect_raises",
    "fail",
    "learner_line",
    "likely",
    "matching_mistakes",
    "named_mistake",
    "preview",
    "raised",
]


class GradingError(AssertionError):
    """A graded check failed; ``str(err)`` is the hint the grader shows."""


# ---------------------------------------------------------------- which part of the learner's code a mistake is in

#: mistake name -> the part of the learner's code it lives in ("causal mask", "merge_heads").
_PARTS: dict[str, str] = {}


def declare_parts(parts: Mapping[str, str]) -> None:
    """Declare, once per test module, the part of the learner's code each named mistake lives in.

    A check that passes and ``covers`` that part rules the mistake out: the report then drops
    the name from every other check's hint (``shared.hints.reconcile``). Two modules giving the
    same name different parts is a course bug, so it raises at import.
    """
    for name, part in parts.items():
        old = _PARTS.get(name)
        if old is not None and old != part:
            raise ValueError(f"mistake {name!r} declared in part {part!r} and in part {old!r}")
        _PARTS[name] = part


def part_of(name: str) -> str:
    """The declared part of a mistake name (a "... ; and NaN" variant shares its base's part)."""
    if name in _PARTS:
        return _PARTS[name]
    for base, part in _PARTS.items():
        if name.startswith(base):
            return part
    return ""


def covers(*parts: str) -> Callable[[F], F]:
    """Decorator: this check, when it passes, establishes that ``parts`` of the learner's code are right.

    Read from the source by the report (no import), so give the parts as string literals.
    """

    def mark(fn: F) -> F:
        fn.__dict__["llmfs_covers"] = parts
        return fn

    return mark


def depends_on(*parts: str) -> Callable[[F], F]:
    """Decorator: this check runs the learner's ``parts`` too. When a check covering one of them
    fails, this one's hint becomes "depends on <part> (failed above)" (one root cause, one message)."""

    def mark(fn: F) -> F:
        fn.__dict__["llmfs_depends"] = parts
        return fn

    return mark


def likely(*names: str) -> str:
    """The "Likely mistake" lines for a diagnosis the check made from its own evidence (several: "one of")."""
    return encode([(n, part_of(n)) for n in names if n], DIAGNOSED)


def _matched(names: list[str]) -> str:
    """The "Likely mistake" lines for mistakes whose computed output matches the learner's."""
    return encode([(n, part_of(n)) for n in names if n], MATCHED)


def learner_line(exc: BaseException) -> str:
    """``attention_head.py line 97, in forward``: the deepest frame of ``exc`` in the learner's stage file."""
    import traceback
    from pathlib import Path

    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        parts = set(path.parts)
        if "site-packages" in parts or "tests" in parts or "shared" in parts or path.name.startswith("<"):
            continue
        if "lib" in parts and "python" in "".join(parts).lower() and "stages" not in parts:
            continue
        found = f"{path.name} line {frame.lineno}, in {frame.name}: {(frame.line or '').strip()[:120]}"
    return found


def raised(exc: BaseException, what: str, *names: str) -> str:
    """The hint for a framework error raised inside the learner's code: the error, the learner's line, the mistake."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    where = learner_line(exc)
    return f"{what} raised {type(exc).__name__}: {first}" + (f"\n  at {where}" if where else "") + likely(*names)


def fail(message: str) -> None:
    raise GradingError(message)


def check(condition: object, message: str) -> None:
    """Fail with ``message`` unless ``condition`` is true."""
    if not condition:
        raise GradingError(message)


def as_numpy(x: Any) -> np.ndarray:
    """A float64 (or bool) NumPy copy of a tensor, array or number, for comparison and printing."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach()
        if x.device.type == "meta":
            fail(f"got a tensor on the 'meta' device ({describe(x)}): it has a shape but no values")
        if x.dtype.is_floating_point or x.dtype.is_complex:
            x = x.double()
        return x.cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind in "fiu":
        return arr.astype(np.float64)
    return arr


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(getattr(x, "shape", np.shape(x)))


def _dtype(x: Any) -> str:
    dt = getattr(x, "dtype", None)
    if dt is None:
        return type(x).__name__
    return str(dt).replace("torch.", "")


def _device(x: Any) -> str:
    dev = getattr(x, "device", None)
    return f", device {dev}" if dev is not None and hasattr(x, "detach") else ""


def describe(x: Any) -> str:
    """``shape (2, 3), dtype float32, device cpu`` for a tensor; the type name for anything else."""
    if not hasattr(x, "shape"):
        return f"{type(x).__name__} {x!r}"[:120]
    return f"shape {_shape(x)}, dtype {_dtype(x)}{_device(x)}"


def _values(a: np.ndarray, n: int = 6) -> str:
    flat = a.reshape(-1)[:n]
    body = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in flat.tolist())
    more = ", ..." if a.size > n else ""
    return f"[{body}{more}]"


def _close(got: np.ndarray, exp: np.ndarray, atol: float, rtol: float) -> bool:
    return got.shape == exp.shape and bool(np.allclose(got, exp, atol=atol, rtol=rtol, equal_nan=False))


def matching_mistakes(
    got: Any,
    mistakes: Mapping[str, Any | Callable[[], Any]] | None,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> list[str]:
    """Every mistake whose output ``got`` matches on this input, in the table's order.

    Each mistake is the output that mistake produces, or a zero-argument callable
    computing it (computed only when needed). A mistake whose output cannot be
    computed is skipped. Several names mean the probe cannot tell them apart: the hint
    then says "one of", never picks one.
    """
    if not mistakes:
        return []
    g = as_numpy(got)
    found: list[str] = []
    for name, value in mistakes.items():
        try:
            m = as_numpy(value() if callable(value) else value)
        except Exception:  # a mistake that cannot be computed for this input is not a match
            continue
        if g.dtype == bool or m.dtype == bool:
            if m.shape == g.shape and np.array_equal(m.astype(bool), g.astype(bool)):
                found.append(name)
            continue
        if m.shape == g.shape and np.all(np.isfinite(m) == np.isfinite(g)):
            finite = np.isfinite(m)
            if _close(g[finite], m[finite], atol, rtol) and np.array_equal(np.isnan(g), np.isnan(m)):
                found.append(name)
    return found


def named_mistake(
    got: Any,
    mistakes: Mapping[str, Any | Callable[[], Any]] | None,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> str | None:
    """The one mistake whose output ``got`` matches, "one of: ..." when several do, or None."""
    names = matching_mistakes(got, mistakes, atol=atol, rtol=rtol)
    if not names:
        return None
    return names[0] if len(names) == 1 else "one of: " + "; ".join(f"({i}) {n}" for i, n in enumerate(names, 1))


def _mistake_line(names: list[str] | str | None) -> str:
    if not names:
        return ""
    return _matched([names] if isinstance(names, str) else names)


def _window(a: np.ndarray, idx: tuple[int, ...], width: int = 6) -> tuple[str, np.ndarray]:
    """The slice of ``a`` around ``idx`` along the last axis: (its index text, its values)."""
    if a.ndim == 0:
        return "", a.reshape(1)
    n = a.shape[-1]
    lo = max(0, min(idx[-1] - width // 2, n - width))
    hi = min(n, lo + width)
    head = ", ".join(str(i) for i in idx[:-1])
    text = f"[{head + ', ' if head else ''}{lo}:{hi}]"
    return text, a[idx[:-1] + (slice(lo, hi),)]


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def preview(expected: np.ndarray, got: np.ndarray, idx: tuple[int, ...]) -> str:
    """Two lines: expected and got around ``idx`` (the first or largest difference), the entry at idx in *stars*."""
    where, e = _window(expected, idx)
    _, g = _window(got, idx)
    lo = int(where.rsplit("[", 1)[-1].split(":")[0].rsplit(" ", 1)[-1]) if where else 0
    at = (idx[-1] - lo) if idx else 0

    def row(vals: np.ndarray) -> str:
        items = [_fmt(v) for v in vals.tolist()]
        if 0 <= at < len(items):
            items[at] = f"*{items[at]}*"
        return "[" + ", ".join(items) + "]"

    return f"  expected{where}: {row(e)}\n  got{where}:{' ' * 6}{row(g)}"


def check_close(
    got: Any,
    expected: Any,
    *,
    what: str,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    reference: str = "",
    mistakes: Mapping[str, Any | Callable[[], Any]] | None = None,
    mistake_atol: float | None = None,
    mistake_rtol: float | None = None,
) -> None:
    """Fail with a teaching message unless ``got`` matches ``expected`` elementwise.

    Args:
        got: the learner's output (tensor, array or number).
        expected: the trusted value, same shape.
        what: what is being compared, e.g. ``"sinusoidal_table(50, 16)"``.
        atol, rtol: tolerances as in ``torch.allclose``; fit them to the dtype.
        reference: where ``expected`` came from (``"torch.nn.LayerNorm"``), shown in the message.
        mistakes: name -> the output that mistake produces (or a callable computing it). Every
            mistake that matches is kept: one is named, several are listed as "one of".
    """
    g, e = as_numpy(got), as_numpy(expected)
    src = f" (reference: {reference})" if reference else ""
    m_atol = atol if mistake_atol is None else mistake_atol
    m_rtol = rtol if mistake_rtol is None else mistake_rtol
    if g.shape != e.shape:
        names = matching_mistakes(got, mistakes, atol=m_atol, rtol=m_rtol)
        fail(
            f"{what}: wrong shape{src}\n"
            f"  expected: {describe(expected)}\n"
            f"  got:      {describe(got)}" + _mistake_line(names)
        )
    if g.dtype == bool or e.dtype == bool:
        bad = g.astype(bool) != e.astype(bool)
        if bad.any():
            names = matching_mistakes(g.astype(bool), mistakes, atol=0.0, rtol=0.0)
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            fail(
                f"{what}: {int(bad.sum())} of {bad.size} entries differ{src}\n"
                f"  shapes: expected {e.shape}, got {describe(got)}\n"
                f"  first at index {idx}: expected {_fmt(e[idx])}, got {_fmt(g[idx])}\n"
                + preview(e, g, idx) + _mistake_line(names)
            )
        return
    nonfinite = ~np.isfinite(g) & np.isfinite(e)
    if nonfinite.any():
        names = matching_mistakes(got, mistakes, atol=m_atol, rtol=m_rtol)
        n_nan, n_inf = int(np.isnan(g).sum()), int(np.isinf(g).sum())
        idx = tuple(int(i) for i in np.argwhere(nonfinite)[0])
        fail(
            f"{what}: got {n_nan} NaN and {n_inf} inf values where finite ones were expected{src}\n"
            f"  shapes: expected {e.shape}, got {describe(got)}; first at index {idx}: expected {e[idx]:.6g}, got {g[idx]}\n"
            + preview(e, g, idx) + _mistake_line(names)
        )
    if np.allclose(g, e, atol=atol, rtol=rtol, equal_nan=True):
        return
    diff = np.abs(np.nan_to_num(g - e, nan=np.inf))
    if diff.ndim == 0:
        idx: tuple[int, ...] = ()
    else:
        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    tol = atol + rtol * np.abs(e)
    n_bad = int((diff > tol).sum())
    names = matching_mistakes(got, mistakes, atol=m_atol, rtol=m_rtol)
    where = f" at index {idx}" if idx else ""
    fail(
        f"{what}: values differ{src}\n"
        f"  shapes: expected {e.shape}, got {describe(got)}\n"
        f"  largest difference {float(diff[idx]):.4g}{where}: expected {float(e[idx]):.6g}, got {float(g[idx]):.6g}\n"
        f"  {n_bad} of {diff.size} values outside atol={atol:g}, rtol={rtol:g}\n"
        + preview(e, g, idx) + _mistake_line(names)
    )


def check_shape(got: Any, expected: tuple[int, ...], *, what: str, mistakes: Mapping[str, Any] | None = None) -> None:
    """Fail unless ``got.shape == expected``; names a mistake whose output has ``got``'s shape and values."""
    shape = _shape(got)
    if shape != tuple(expected):
        names = matching_mistakes(got, mistakes) if hasattr(got, "shape") else []
        fail(f"{what}: expected shape {tuple(expected)}, got {describe(got)}" + _mistake_line(names))


def expect_raises(
    exc_types: type[BaseException] | tuple[type[BaseException], ...],
    fn: Callable[..., Any],
    *args: Any,
    what: str,
    match: str | None = None,
    **kwargs: Any,
) -> BaseException:
    """Call ``fn(*args, **kwargs)`` and require it to raise one of ``exc_types``.

    ``NotImplementedError`` passes through (the grader reports "not implemented").
    Returns the exception raised.
    """
    types = exc_types if isinstance(exc_types, tuple) else (exc_types,)
    names = " or ".join(t.__name__ for t in types)
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except types as exc:
        if match is not None and match.lower() not in str(exc).lower():
            fail(f"{what}: raised {type(exc).__name__} as expected, but its message {str(exc)!r} does not mention {match!r}")
        return exc
    except Exception as exc:  # the wrong kind of error: say which
        fail(f"{what}: expected {names}, got {type(exc).__name__}: {exc}")
    fail(f"{what}: expected {names} to be raised, but it returned {describe(result)}")
    raise AssertionError("unreachable")

