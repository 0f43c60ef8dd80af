"""JSON helpers shared by every family: numbers from numpy/torch as plain JSON, and reading a saved file
with one-line errors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError


def json_default(obj: Any) -> Any:
    """``json.dumps(..., default=json_default)``: numpy / torch scalars and arrays as numbers and lists,
    anything else as its string."""
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def jsonable(obj: Any) -> Any:
    """``obj`` as strict JSON values: non-finite floats (``inf``, ``nan``) become ``None`` (JSON ``null``, which
    ``json.dumps`` would otherwise write as the non-standard ``Infinity`` / ``NaN``); numpy and torch scalars and
    arrays become numbers and lists; dict keys become strings. Anything else is left to
    ``json.dumps(..., default=json_default)``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())  # nested lists (a 0-d array: its scalar)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if not isinstance(obj, (str, bytes, int)) and (hasattr(obj, "tolist") or
                                                    (hasattr(obj, "item") and getattr(obj, "ndim", None) == 0)):
        return jsonable(json_default(obj))  # a torch tensor or 0-d array: its values, sanitised the same way
    return obj


def read_json_file(path: str | os.PathLike, what: str, fix: str) -> Any:
    """The JSON value in ``path``; `InputError` naming ``what`` the file should be when it is missing or not
    JSON (``fix`` says how to rewrite it)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist", "check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{what} file {path} is not readable JSON ({exc})", fix) from None
    except RecursionError:  # nested beyond Python's limit: no file brittle writes
        raise InputError(f"{what} file {path} is not readable JSON (nested too deeply)", fix) from None
