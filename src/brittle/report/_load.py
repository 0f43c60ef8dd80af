"""Read an audit's run directory (``summary.json``, ``samples.parquet``, ``curves.json``, ``examples.npz``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError, StoreError


@dataclass
class Run:
    """One audit as the report sees it: the summary, per-sample table, curves and (optional) examples."""

    path: Path
    summary: dict[str, Any]
    samples: pd.DataFrame | None
    curves: dict[str, Any]
    examples: dict[str, np.ndarray] | None
    eps: list[float] = field(default_factory=list)

    @property
    def model(self) -> str:
        return str(self.summary.get("model", "unnamed model"))

    @property
    def norm(self) -> str:
        return str(self.summary.get("norm", "linf")).lower()

    def at(self, section: str, eps: float) -> Any:
        """``summary[section]`` entry for ``eps``, whatever its key spelling (``"0.1"``, ``"0.10"``)."""
        return lookup_eps(self.summary.get(section), eps)

    def curve(self, eps: float) -> dict[str, Any] | None:
        """The ROC/PR curves stored for ``eps``, or ``None``."""
        return lookup_eps(self.curves, eps)


def lookup_eps(mapping: Any, eps: float) -> Any:
    """Value of ``mapping`` (keyed by ε as strings) for ``eps``, matching keys numerically; ``None`` if absent."""
    if not isinstance(mapping, dict):
        return None
    for key, value in mapping.items():
        try:
            if math.isclose(float(key), eps, rel_tol=1e-9, abs_tol=1e-12):
                return value
        except (TypeError, ValueError):
            continue
    return None


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})",
                         "re-run the audit to rewrite it") from None


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory; raises `StoreError` when it is not one (no ``summary.json``) or a file is corrupt."""
    path = Path(run_dir)
    if not path.is_dir():
        raise InputError(f"run directory {path} does not exist", "pass the --out directory of an audit")
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        raise StoreError(f"{path} has no summary.json, so it is not a finished audit",
                         "run the audit to completion, or pass its --out directory")
    summary = _read_json(summary_path)
    if not isinstance(summary, dict):
        raise StoreError(f"{summary_path} does not hold a JSON object", "re-run the audit to rewrite it")

    samples = None
    samples_path = path / "samples.parquet"
    if samples_path.is_file():
        try:
            samples = pd.read_parquet(samples_path)
        except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
            raise StoreError(f"{samples_path} cannot be read ({type(exc).__name__})",
                             "re-run the audit to rewrite it") from None

    curves = _read_json(path / "curves.json") if (path / "curves.json").is_file() else {}
    if not isinstance(curves, dict):
        curves = {}

    examples = None
    examples_path = path / "examples.npz"
    if examples_path.is_file():
        try:
            with np.load(examples_path, allow_pickle=False) as npz:
                examples = {k: np.asarray(npz[k]) for k in npz.files}
        except Exception as exc:
            raise StoreError(f"{examples_path} cannot be read ({type(exc).__name__})",
                             "re-run the audit to rewrite it") from None
        if not {"x", "x_adv"} <= set(examples) or examples["x"].ndim != 4 or examples["x"].shape != examples["x_adv"].shape:
            examples = None  # not image data in the documented layout: the gallery is left out

    eps = sorted({float(e) for e in summary.get("eps") or []})
    if not eps:  # fall back on whatever ε the per-ε sections use
        keys = set((summary.get("robust_accuracy") or {}).keys()) | set((summary.get("detection") or {}).keys())
        eps = sorted({float(k) for k in keys if _is_number(k)})
    return Run(path=path, summary=summary, samples=samples, curves=curves, examples=examples, eps=eps)


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def num(value: Any) -> float | None:
    """``value`` as a finite-or-infinite float, ``None`` for missing / null / NaN / non-numbers."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out
