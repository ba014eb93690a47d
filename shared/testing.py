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
from typing import Any

import numpy as np

__all__ = [
    "GradingError",
    "as_numpy",
    "check",
    "check_close",
    "check_shape",
    "describe",
    "expect_raises",
    "fail",
    "named_mistake",
]


class GradingError(AssertionError):
    """A graded check failed; ``str(err)`` is the hint the grader shows."""


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


def named_mistake(
    got: Any,
    mistakes: Mapping[str, Any | Callable[[], Any]] | None,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> str | None:
    """The name of the first mistake whose output ``got`` matches, or None.

    Each mistake is the output that mistake produces, or a zero-argument callable
    computing it (computed only when needed). A mistake whose output cannot be
    computed is skipped.
    """
    if not mistakes:
        return None
    g = as_numpy(got)
    for name, value in mistakes.items():
        try:
            m = as_numpy(value() if callable(value) else value)
        except Exception:  # a mistake that cannot be computed for this input is not a match
            continue
        if m.shape == g.shape and np.all(np.isfinite(m) == np.isfinite(g)):
            finite = np.isfinite(m)
            if _close(g[finite], m[finite], atol, rtol) and np.array_equal(np.isnan(g), np.isnan(m)):
                return name
    return None


def _mistake_line(name: str | None) -> str:
    if name is None:
        return ""
    return f"\n  Likely mistake: {name} (your output matches what that mistake produces)."


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
        mistakes: name -> the output that mistake produces (or a callable computing it).
    """
    g, e = as_numpy(got), as_numpy(expected)
    src = f" (reference: {reference})" if reference else ""
    m_atol = atol if mistake_atol is None else mistake_atol
    m_rtol = rtol if mistake_rtol is None else mistake_rtol
    if g.shape != e.shape:
        name = named_mistake(got, mistakes, atol=m_atol, rtol=m_rtol)
        fail(
            f"{what}: wrong shape{src}\n"
            f"  expected: {describe(expected)}\n"
            f"  got:      {describe(got)}" + _mistake_line(name)
        )
    if g.dtype == bool or e.dtype == bool:
        bad = g != e
        if bad.any():
            as_float = {k: (lambda v=v: as_numpy(v() if callable(v) else v).astype(np.float64)) for k, v in (mistakes or {}).items()}
            name = named_mistake(g.astype(np.float64), as_float, atol=0.0, rtol=0.0)
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            fail(
                f"{what}: {int(bad.sum())} of {bad.size} entries differ{src}\n"
                f"  first at index {idx}: expected {e[idx]}, got {g[idx]}\n"
                f"  expected: {_values(e, 12)}\n  got:      {_values(g, 12)}" + _mistake_line(name)
            )
        return
    nonfinite = ~np.isfinite(g) & np.isfinite(e)
    if nonfinite.any():
        name = named_mistake(got, mistakes, atol=m_atol, rtol=m_rtol)
        n_nan, n_inf = int(np.isnan(g).sum()), int(np.isinf(g).sum())
        idx = tuple(int(i) for i in np.argwhere(nonfinite)[0])
        fail(
            f"{what}: got {n_nan} NaN and {n_inf} inf values where finite ones were expected{src}\n"
            f"  shape {g.shape}; first at index {idx}: expected {e[idx]:.6g}, got {g[idx]}\n"
            f"  got ({describe(got)}): {_values(g)}" + _mistake_line(name)
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
    name = named_mistake(got, mistakes, atol=m_atol, rtol=m_rtol)
    where = f" at index {idx}" if idx else ""
    fail(
        f"{what}: values differ{src}\n"
        f"  shapes: expected {e.shape}, got {describe(got)}\n"
        f"  largest difference {float(diff[idx]):.4g}{where}: expected {float(e[idx]):.6g}, got {float(g[idx]):.6g}\n"
        f"  {n_bad} of {diff.size} values outside atol={atol:g}, rtol={rtol:g}\n"
        f"  expected: {_values(e)}\n"
        f"  got:      {_values(g)}" + _mistake_line(name)
    )


def check_shape(got: Any, expected: tuple[int, ...], *, what: str, mistakes: Mapping[str, Any] | None = None) -> None:
    """Fail unless ``got.shape == expected``; names a mistake whose output has ``got``'s shape and values."""
    shape = _shape(got)
    if shape != tuple(expected):
        name = named_mistake(got, mistakes)
        fail(f"{what}: expected shape {tuple(expected)}, got {describe(got)}" + _mistake_line(name))


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

