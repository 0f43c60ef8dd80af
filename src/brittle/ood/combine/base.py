"""The `Combiner` base: several OOD scores per input → one OOD score, fitted on in-distribution scores only.

A combination strategy (Novello et al., *Improving OOD Detection by Combining Existing Post-hoc Methods*,
arXiv 2407.07135) sees the scores of ``d`` detectors on the same inputs as a matrix ``(N, d)``:

* ``fit(scores_id_val)`` learns from the scores of **in-distribution validation** inputs (never OOD data)
  and returns ``self``;
* ``score(scores)`` returns one float64 score per row, **higher = more OOD** (the orientation of every brittle
  OOD detector, ``flag_below = False``);
* ``threshold(tpr)`` is the score that accepts (``score <= t``) a share ``tpr`` of the ID validation rows —
  the ``ceil(tpr·n)``-th smallest fitted score, the convention of `brittle.analysis.detection.threshold_at_tpr`.

Every column must already be oriented "higher = more OOD": `CombinedDetector` does it with each detector's
``risk`` (so a margin, which flags *low* values, can be combined too). Each strategy defines a family of
**nested acceptance regions** ``A_t = {s : score(s) <= t}`` of the score space ``R^d``; the multi-dimensional
metrics of `brittle.ood.combine.metrics` sweep ``t``.

A new strategy is a module with a subclass and ``@register_combiner``; state round-trips through plain JSON
(`Combiner.to_dict` / `combiner_from_dict`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ...errors import InputError
from ...core.registry import check_params, import_builtins, init_param_names, lookup, lookup_description

#: name → strategy class (filled by `register_combiner`)
COMBINERS: dict[str, type["Combiner"]] = {}

#: modules whose import registers the built-in strategies
BUILTIN_COMBINERS = (".vote", ".ecdf", ".copula", ".center_outward")


def register_combiner(cls: type["Combiner"]) -> type["Combiner"]:
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    COMBINERS[cls.name] = cls
    return cls


def check_score_matrix(scores: Any, what: str = "scores", *, d: int | None = None, min_rows: int = 1) -> np.ndarray:
    """``scores`` as a finite float64 matrix ``(N, d)`` (a 1-D array is one detector: ``(N, 1)``), or `InputError`."""
    if scores is None:
        raise InputError(f"{what} are missing", f"pass {what} as an (N, d) array: one column per detector")
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    if hasattr(scores, "to_numpy"):
        scores = scores.to_numpy()
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} are not numbers", f"pass {what} as an (N, d) float array") from None
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[1] == 0:
        raise InputError(f"{what} have shape {s.shape}: expected (N, d), one column per detector",
                         "stack the detectors' scores as columns: np.column_stack([...])")
    if len(s) < min_rows:
        raise InputError(f"{what} have {len(s)} row(s), at least {min_rows} needed", "pass more in-distribution inputs")
    if d is not None and s.shape[1] != d:
        raise InputError(f"{what} have {s.shape[1]} column(s) but the strategy was fitted on {d} detector(s)",
                         "pass the scores of the same detectors, in the same order, as at fit time")
    if not np.isfinite(s).all():
        bad = np.argwhere(~np.isfinite(s))[0]
        raise InputError(f"{what} contain NaN or infinite values (first at row {bad[0]}, column {bad[1]})",
                         "check the detectors and their inputs")
    return s


def check_tpr(tpr: Any) -> float:
    try:
        t = float(tpr)
    except (TypeError, ValueError):
        raise InputError(f"tpr must be a number in (0, 1], got {tpr!r}", "pass e.g. tpr=0.95") from None
    if not (0.0 < t <= 1.0):
        raise InputError(f"tpr must be in (0, 1], got {t}", "pass e.g. tpr=0.95")
    return t


class Combiner:
    """Base of the combination strategies (contract: module docstring)."""

    name: ClassVar[str] = ""
    #: fewest ID validation rows `fit` accepts
    min_fit_rows: ClassVar[int] = 2

    # --- fitting ---------------------------------------------------------------------------------
    def fit(self, scores_id_val: Any) -> "Combiner":
        s = check_score_matrix(scores_id_val, "scores_id_val", min_rows=self.min_fit_rows)
        self.d_ = s.shape[1]
        self._fit(s)
        self.fit_scores_ = np.sort(self._score(s))
        return self

    def _fit(self, s: np.ndarray) -> None:
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "fit_scores_")

    def check_fitted(self) -> None:
        if not self.is_fitted:
            raise InputError(f"this {type(self).__name__} is not fitted yet",
                             f"call {type(self).__name__}.fit(scores_id_val) on in-distribution validation scores first")

    # --- scoring ---------------------------------------------------------------------------------
    def score(self, scores: Any) -> np.ndarray:
        """One OOD score per row (higher = more OOD)."""
        self.check_fitted()
        s = check_score_matrix(scores, "scores", d=self.d_)
        return np.asarray(self._score(s), dtype=np.float64)

    def _score(self, s: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def threshold(self, tpr: float = 0.95) -> float:
        """Score accepting (``<= t``) at least ``tpr`` of the ID validation rows; flag ``score > t``."""
        self.check_fitted()
        tpr = check_tpr(tpr)
        k = max(1, math.ceil(tpr * len(self.fit_scores_) - 1e-9))
        return float(self.fit_scores_[k - 1])

    def accept(self, scores: Any, tpr: float = 0.95) -> np.ndarray:
        """True where a row lies in the acceptance region calibrated at ``tpr`` (ID-like)."""
        return self.score(scores) <= self.threshold(tpr)

    # --- persistence -----------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {}

    def get_state(self) -> dict[str, Any]:
        if not self.is_fitted:
            return {}
        return {"d": int(self.d_), "fit_scores": self.fit_scores_.tolist(), **self._get_state()}

    def _get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.d_ = int(state["d"])
        self._set_state(state)
        self.fit_scores_ = np.asarray(state["fit_scores"], dtype=np.float64)

    def _set_state(self, state: dict[str, Any]) -> None:
        pass

    def to_dict(self) -> dict[str, Any]:
        return {"combiner": self.name, "params": self.get_params(), "state": self.get_state()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def _load_builtin() -> None:
    import_builtins(BUILTIN_COMBINERS, __package__)


def _build(cls: type[Combiner], params: dict[str, Any]) -> Combiner:
    check_params(cls.name, params, init_param_names(cls))  # an unknown parameter: InputError naming the known ones
    return cls(**params)


def make_combiner(name: str, **params: Any) -> Combiner:
    """A strategy by name: ``"vote"``, ``"ecdf"``, ``"copula"`` or ``"ot"``."""
    _load_builtin()
    return _build(lookup(COMBINERS, name, "combination strategy"), params)


def combiner_from_dict(d: dict[str, Any]) -> Combiner:
    """Rebuild a strategy written by `Combiner.to_dict` (plain JSON; never unpickles)."""
    _load_builtin()
    cls = lookup_description(COMBINERS, d, "combiner", "combination strategy", "pass Combiner.to_dict() output")
    c = _build(cls, dict(d.get("params") or {}))
    c.set_state(d.get("state") or {})
    return c


def strategy_names() -> list[str]:
    _load_builtin()
    return sorted(COMBINERS)
