"""A run directory as data: `Run` (summary, per-sample table, curves, examples) and the one `load_run`.

Summaries keep ε-keyed sections (``robust_accuracy``, ``detection``, ...) as `EpsDict`: in Python the keys
are floats and a lookup by float or by string (``0.1`` or ``"0.1"``) works; in ``summary.json`` they are the
same strings as ever (``"0.1"``). The audit (`brittle.auditing`) writes runs, the report reads them: both
depend on this module, not on each other.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError, RunNotFoundError, StoreError

EPS_SECTIONS = ("robust_accuracy", "detection", "flipped_share", "subset_estimate")
#: relative tolerance of an ε key lookup: a float32's precision, far below the gap between two budgets of a grid
EPS_MATCH = 1e-6


class EpsDict(dict):
    """A dict keyed by ε as floats that also answers string keys (``"0.1"``) by numeric match."""

    def _key(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                value = float(key)
            except ValueError:
                return key
        elif isinstance(key, (int, float, np.integer, np.floating)) and not isinstance(key, bool):
            value = float(key)
        else:
            return key
        for existing in dict.keys(self):  # float32's precision: 8/255 finds the ε given as np.float32(8/255)
            if isinstance(existing, float) and math.isclose(existing, value, rel_tol=EPS_MATCH, abs_tol=1e-12):
                return existing
        return value

    def __getitem__(self, key: Any) -> Any:
        return dict.__getitem__(self, self._key(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, self._key(key), value)

    def __contains__(self, key: Any) -> bool:
        return dict.__contains__(self, self._key(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return dict.get(self, self._key(key), default)


def eps_keyed(mapping: Any) -> Any:
    """``mapping`` (keys: ε as numbers or numeric strings) as an `EpsDict`; other values unchanged."""
    if not isinstance(mapping, dict) or not mapping:
        return mapping
    try:
        [float(k) for k in mapping]
    except (TypeError, ValueError):
        return mapping
    out = EpsDict()
    for k, v in mapping.items():
        out[k] = v
    return out


def with_eps_keys(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with every ε-keyed section (and the pseudo-margin's per-ε metrics) as `EpsDict`."""
    out = dict(summary)
    for key in EPS_SECTIONS:
        if key in out:
            out[key] = eps_keyed(out[key])
    pm = out.get("pseudo_margin")
    if isinstance(pm, dict):
        out["pseudo_margin"] = {k: eps_keyed(v) if isinstance(v, dict) else v for k, v in pm.items()}
    return out


def json_ready(obj: Any) -> Any:
    """``obj`` with float dict keys written as ``str(float)`` (``0.1`` → ``"0.1"``), as summary.json has them."""
    if isinstance(obj, dict):
        return {(str(float(k)) if isinstance(k, (float, np.floating)) else k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def summary_repr(kind: str, summary: dict[str, Any], n: int, where: Any) -> str:
    """A one-line repr of an audit's headline numbers (the whole summary and table are attributes)."""
    def fmt(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else repr(value)

    parts = [f"n={n}"]
    for key in ("model", "norm", "eps", "clean_accuracy"):
        if summary.get(key) is not None:
            parts.append(f"{key}={fmt(summary[key])}")
    tau = summary.get("kendall_tau")
    if isinstance(tau, dict) and tau.get("value") is not None:
        parts.append(f"kendall_tau={fmt(tau['value'])}")
    robust = summary.get("robust_accuracy")
    if isinstance(robust, dict) and robust:
        values = {k: v.get("upper") if isinstance(v, dict) else v for k, v in robust.items()}
        parts.append("robust_accuracy={" + ", ".join(f"{k}: {fmt(v)}" for k, v in values.items()) + "}")
    if where is not None:
        parts.append(f"directory={str(where)!r}")
    return f"{kind}({', '.join(parts)})"


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
    def table(self) -> pd.DataFrame | None:
        """The per-sample table (``samples.parquet``, or ``margins.parquet`` of a margins-only run)."""
        return self.samples

    def to_frame(self) -> pd.DataFrame | None:
        """The per-sample table (``table``), as every result's ``to_frame()`` gives it."""
        return self.samples

    # Indexing a run indexes its per-sample table (``run["input_margin_upper"]``), as with a DataFrame.
    def __getitem__(self, column: Any) -> Any:
        if self.samples is None:
            raise InputError(f"{self.path} holds no per-sample table", "re-run the audit with --out")
        return self.samples[column]

    @property
    def columns(self) -> pd.Index:
        return self.samples.columns if self.samples is not None else pd.Index([])

    @property
    def attrs(self) -> dict[str, Any]:
        """``{"summary": summary}``, where pandas keeps a DataFrame's metadata."""
        return {"summary": self.summary}

    def __len__(self) -> int:
        return 0 if self.samples is None else len(self.samples)

    def __repr__(self) -> str:
        return summary_repr("Run", self.summary, len(self), self.path)

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
            if math.isclose(float(key), eps, rel_tol=EPS_MATCH, abs_tol=1e-12):
                return value
        except (TypeError, ValueError):
            continue
    return None


def read_run_json(path: Path, fix: str = "re-run the audit to rewrite it") -> Any:
    """The JSON value of a run's file; `StoreError` (naming the file and ``fix``) when it is damaged."""
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})", fix) from None
    except (RecursionError, UnicodeDecodeError) as exc:  # nested beyond Python's limit, or not text
        raise StoreError(f"{path} is not valid JSON ({type(exc).__name__})", fix) from None


def read_run_table(path: Path, fix: str = "re-run the audit to rewrite it") -> pd.DataFrame:
    """A run's Parquet table; `StoreError` (naming the file and ``fix``) when it is damaged."""
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several unrelated types for corrupt files
        raise StoreError(f"{path} cannot be read ({type(exc).__name__})", fix) from None


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory written by `brittle.audit` / ``brittle audit`` (or ``brittle margins``).

    Raises `InputError` when the directory does not exist, `RunNotFoundError` (both an `InputError` and a
    `StoreError`) when it holds no finished run, and `StoreError` when a file is corrupt.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise InputError(f"run directory {path} does not exist", "pass the --out directory of an audit")
    summary_path = path / "summary.json"
    table_path = next((path / name for name in ("samples.parquet", "margins.parquet") if (path / name).is_file()),
                      None)
    if not summary_path.is_file() and table_path is None:
        raise RunNotFoundError(f"{path} holds no finished run (no summary.json, samples.parquet or margins.parquet)",
                               "run `brittle audit`/`brittle margins` with --out there first (re-running resumes)")
    summary = read_run_json(summary_path) if summary_path.is_file() else {}
    if not isinstance(summary, dict):
        raise StoreError(f"{summary_path} does not hold a JSON object", "re-run the audit to rewrite it")

    samples = read_run_table(table_path) if table_path is not None else None

    curves = read_run_json(path / "curves.json") if (path / "curves.json").is_file() else {}
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
    return Run(path=path, summary=with_eps_keys(summary), samples=samples, curves=eps_keyed(curves),
               examples=examples, eps=eps)


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


