"""The report's view of a run directory: `Run` and `load_run` live in `brittle.core.runs` (one loader
for the API and the report); this module adds the number helpers the report needs."""

from __future__ import annotations

import math
from typing import Any


from ..core.runs import Run, load_run, lookup_eps  # noqa: F401 - the report's loader


def num(value: Any) -> float | None:
    """``value`` as a finite-or-infinite float, ``None`` for missing / null / NaN / non-numbers."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out
