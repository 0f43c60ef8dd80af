"""Validation shared by every family: norms, budgets (ε), margin arrays, unit-interval settings, fitted state.

Each check returns the canonical value or raises `brittle.errors.InputError` with the problem and the fix.
Checks run at the API boundary, before any side effect (run directory, store, cluster, worker).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError

NORMS = ("linf", "l2")


_NORM_ALIASES = {"linf": "linf", "l_inf": "linf", "inf": "linf", "Linf": "linf", "l2": "l2", "L2": "l2", "2": "l2"}


def check_norm(norm: str) -> str:
    """Canonical norm name (``"linf"`` or ``"l2"``); raises `InputError` otherwise."""
    canon = _NORM_ALIASES.get(str(norm)) or _NORM_ALIASES.get(str(norm).lower())
    if canon is None:
        raise InputError(f"unknown norm {norm!r}", "use 'linf' or 'l2'")
    return canon


def as_margin_array(a: Any, name: str, *, n: int | None = None, allow_inf: bool = True,
                    nonnegative: bool = True, min_len: int = 1) -> np.ndarray:
    """``a`` as a 1-D float64 array, checked: no NaN, ``inf`` only where allowed, ``>= 0`` where required."""
    if a is None:
        raise InputError(f"{name} is missing", f"pass {name} as a 1-D array")
    try:
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} is not numeric", f"pass {name} as a 1-D array of floats") from None
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise InputError(f"{name} has shape {arr.shape}: expected one value per sample, shape (N,)",
                         f"pass {name} as a 1-D array")
    if len(arr) < min_len:
        raise InputError(f"{name} has {len(arr)} value(s), at least {min_len} needed", "pass more samples")
    if n is not None and len(arr) != n:
        raise InputError(f"{name} has {len(arr)} values but there are {n} samples",
                         f"pass one {name} value per sample (same order as the other arrays)")
    nan = np.isnan(arr)
    if nan.any():
        raise InputError(f"{name} has {int(nan.sum())} NaN value(s), first at index {int(np.argmax(nan))}",
                         "remove those samples or recompute them (a failed attack is inf, not NaN)")
    if not allow_inf and np.isinf(arr).any():
        raise InputError(f"{name} has infinite value(s), first at index {int(np.argmax(np.isinf(arr)))}",
                         f"pass finite {name} values")
    if nonnegative and (arr < 0).any():
        bad = int(np.argmax(arr < 0))
        raise InputError(f"{name} has negative value(s) (e.g. {arr[bad]:.4g} at index {bad}); margins are >= 0",
                         "pass distances (>= 0), not signed scores")
    return arr


def as_bool_array(a: Any, name: str, n: int) -> np.ndarray:
    """``a`` as a 1-D bool array of length ``n`` (accepts 0/1 integers)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.ndim != 1 or len(arr) != n:
        raise InputError(f"{name} has shape {arr.shape} but there are {n} samples", f"pass one {name} flag per sample")
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            raise InputError(f"{name} must be booleans (or 0/1)", f"pass {name} as e.g. pred == y")
        arr = arr.astype(bool)
    return arr


def as_eps_array(eps: Any) -> np.ndarray:
    """ε as a 1-D array of finite positive values."""
    try:
        arr = np.atleast_1d(np.asarray(eps, dtype=np.float64)).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"eps must be a number or a list of numbers, got {eps!r}", "pass e.g. eps=8/255") from None
    if len(arr) == 0:
        raise InputError("eps is empty", "pass at least one ε")
    if not np.isfinite(arr).all() or (arr <= 0).any():
        raise InputError(f"eps must be finite and > 0, got {arr.tolist()}", "pass e.g. eps=8/255 or eps=[0.1, 0.2]")
    return arr


def check_unit_interval(value: float, name: str, *, closed_low: bool = False) -> float:
    """``value`` checked to lie in (0, 1] (or [0, 1] when ``closed_low``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}", f"pass {name} in (0, 1]") from None
    ok = (0 <= v <= 1) if closed_low else (0 < v <= 1)
    if not ok or math.isnan(v):
        raise InputError(f"{name} must be in {'[0, 1]' if closed_low else '(0, 1]'}, got {value!r}",
                         f"pass e.g. {name}=0.95")
    return v


def check_eps_grid(eps_grid: Sequence[float] | np.ndarray, *, start_at_zero: bool = True) -> np.ndarray:
    """The grid as a float array: 1-D, finite, >= 0, strictly increasing, starting at 0 when asked."""
    grid = np.asarray(eps_grid, dtype=float)
    if grid.ndim != 1 or grid.size == 0:
        raise InputError(f"eps grid must be a non-empty 1-D sequence, got shape {grid.shape}",
                         "pass e.g. [0, 0.1, 0.2, 0.3]")
    if not np.all(np.isfinite(grid)) or np.any(grid < 0):
        raise InputError("eps grid values must be finite and >= 0", "pass e.g. [0, 0.1, 0.2, 0.3]")
    if np.any(np.diff(grid) <= 0):
        raise InputError("eps grid must be strictly increasing", "sort the grid and drop repeated values")
    if start_at_zero and grid[0] != 0:
        raise InputError(f"eps grid starts at {grid[0]:g}, not 0", "prepend 0 (the clean accuracy) to the grid")
    return grid


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def parse_number(value: Any, what: str = "ε") -> float:
    """A float from a number or a simple arithmetic string such as ``"8/255"`` or ``"0.5*2/255"``.

    Only numbers and ``+ - * /`` are accepted (the string is parsed, never evaluated as code).
    """
    if getattr(value, "ndim", None) == 0 and hasattr(value, "dtype") and not isinstance(value, np.ndarray):
        value = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)[()]  # a 0-d tensor
    if isinstance(value, (np.float16, np.float32)):
        # the decimal a float32 prints as (0.1, not 0.10000000149011612), so that ε-keyed results are found
        # under the number the user wrote
        return float(np.format_float_positional(value, unique=True, trim="-"))
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError

    try:
        return float(walk(ast.parse(text, mode="eval").body))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        raise InputError(f"{what} {value!r} is not a number",
                         "pass a number or a fraction such as 0.1 or 8/255") from None


def check_eps(eps: Any) -> list[float]:
    """A non-empty, sorted list of distinct finite ε > 0, or `InputError`.

    Accepts a number, a list of numbers, or strings such as ``"8/255"`` / ``"0.1,0.2"``.
    """
    if isinstance(eps, str):
        values: list[Any] = [part for part in eps.split(",") if part.strip()]
    elif isinstance(eps, (int, float, np.integer, np.floating)):
        values = [eps]
    elif hasattr(eps, "dtype") and hasattr(eps, "shape"):  # a numpy array or torch tensor: keep its dtype
        values = list(np.asarray(eps.detach().cpu() if hasattr(eps, "detach") else eps).reshape(-1))
    else:
        try:
            values = list(np.asarray(eps, dtype=object).reshape(-1))
        except TypeError:
            raise InputError(f"ε {eps!r} is not a number or a list of numbers", "pass e.g. eps=[0.1, 0.2]") from None
    if not values:
        raise InputError("no ε was given", "pass e.g. eps=[0.1, 0.2, 0.3]")
    out = []
    for e in values:
        f = parse_number(e)
        if not math.isfinite(f) or f <= 0:
            raise InputError(f"ε must be finite and > 0, got {e!r}", "pass positive budgets, e.g. eps=[0.1, 0.2]")
        out.append(f)
    return sorted(set(out))


def check_fitted(estimator: Any, attributes: Sequence[str]) -> None:
    """Raise `InputError` unless ``estimator`` has every fitted attribute (names ending in ``_``)."""
    missing = [a for a in attributes if getattr(estimator, a, None) is None]
    if missing:
        name = type(estimator).__name__
        raise InputError(f"this {name} is not fitted yet (no {', '.join(missing)})",
                         f"call {name}.fit(...) first, or load a fitted one")


def check_eps_for_domain(eps: Any, norm: str, domain: Sequence[float], input_dim: int) -> list[float]:
    """ε checked against the input domain: at most half the domain's width in L∞ (half the box's diagonal
    in L2). Beyond that every input can be moved to the centre of the domain, so robust accuracy is 0 by
    construction and the audit measures nothing (e.g. ε = 8 on images in [0, 1], meant as 8/255)."""
    values = check_eps(eps)
    norm = check_norm(norm)
    lo, hi = (float(v) for v in domain)
    width = hi - lo
    limit = 0.5 * width * (1.0 if norm == "linf" else math.sqrt(max(int(input_dim), 1)))
    too_big = [e for e in values if e > limit * (1 + 1e-9)]
    if too_big:
        unit = "half the domain's width" if norm == "linf" else "half the diagonal of the input box"
        fix = (f"pass ε in the units of the domain [{lo:g}, {hi:g}]"
               + (", e.g. 8/255 instead of 8 for images in [0, 1]" if width <= 1 and max(too_big) >= 1 else ""))
        shown = f"{max(too_big):g}" if float(f"{max(too_big):g}") > limit else repr(max(too_big))  # 0.5000001 > 0.5
        raise InputError(f"ε = {shown} is larger than {unit} ({limit:.4g} in {norm} for the domain "
                         f"[{lo:g}, {hi:g}]): every input can then be moved to the centre of the domain, so "
                         f"robustness is 0 by construction", fix)
    return values


def check_positive(value: Any, name: str = "eps", fix: str = "pass e.g. eps=8/255") -> float:
    """``value`` as a finite float > 0 (a budget, a rate), or `InputError` naming ``name``."""
    v = math.nan if isinstance(value, (bool, np.bool_, str, bytes)) else value
    try:
        v = float(v)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}", fix)
    return v


def check_nonnegative(value: Any, name: str = "eps", fix: str = "pass a non-negative perturbation budget") -> float:
    """``value`` as a finite float >= 0 (a budget that may be 0), or `InputError` naming ``name``."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise InputError(f"{name} must be a number, got {value!r}", fix)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}", fix) from None
    if not math.isfinite(v) or v < 0:
        raise InputError(f"{name} must be finite and >= 0, got {value!r}", fix)
    return v


def check_positive_int(value: Any, name: str = "steps", fix: str = "pass a positive integer") -> int:
    """``value`` as an int >= 1, or `InputError` naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}", fix)
    return int(value)


def check_nonnegative_int(value: Any, name: str = "seed", fix: str = "pass e.g. seed=0") -> int:
    """``value`` as an int >= 0 (a seed, a count that may be 0), or `InputError` naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{name} must be an integer >= 0, got {value!r}", fix)
    return int(value)
