"""JSON helpers shared by every family: numbers from numpy/torch as plain JSON, and reading a saved file
with one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError


def json_default(obj: Any) -> Any:
    """``json.dumps(..., default=json_default)``: numpy / torch scalars and arrays as numbers and lists,
    anything else as its string."""
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def read_json_file(path: str | os.PathLike, what: str, fix: str) -> Any:
    """The JSON value in ``path``; `InputError` naming ``what`` the file should be when it is missing or not
    JSON (``fix`` says how to rewrite it)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist", "check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{what} file {path} is not readable JSON ({exc})", fix) from None
