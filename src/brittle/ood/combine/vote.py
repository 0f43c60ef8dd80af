"""Majority vote of ``d`` detectors, each thresholded at the same ID quantile.

Detector ``k`` flags an input at level ``q`` when its score exceeds its own ID ``q``-quantile,
``s_k > F̂_k⁻¹(q)``; the vote flags the input when at least ``quorum`` detectors do (default: a strict majority,
``⌊d/2⌋ + 1``). Raising ``q`` shrinks every per-detector rejection region, so the acceptance regions are nested;
the input's **vote score** is the level at which it stops being flagged: the ``quorum``-th largest of the
marginal normal scores ``z_k = Φ⁻¹(F̂_k(s_k))`` (`_marginals`). ``threshold(tpr)`` is the vote score that
accepts ``tpr`` of the ID validation inputs, so the per-detector thresholds are calibrated *jointly* — the vote's
ID acceptance hits the target, not each detector's (`per_detector_thresholds` gives them in each detector's
units).

With ``d`` identical detectors every ``z_k`` is the same increasing function of the one score, so the vote
ranks and accepts exactly like the single detector (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import InputError
from ._marginals import EmpiricalMarginals
from .base import Combiner, register_combiner


@register_combiner
class MajorityVote(Combiner):
    name = "vote"

    def __init__(self, quorum: int | None = None):
        if quorum is not None and (not isinstance(quorum, (int, np.integer)) or isinstance(quorum, bool) or quorum < 1):
            raise InputError(f"quorum must be a positive integer or None, got {quorum!r}",
                             "pass quorum=None (strict majority) or the number of detectors that must flag")
        self.quorum = None if quorum is None else int(quorum)

    def _m(self, d: int) -> int:
        m = d // 2 + 1 if self.quorum is None else self.quorum
        if m > d:
            raise InputError(f"quorum={m} exceeds the {d} detector(s) combined", f"pass quorum <= {d}")
        return m

    def _fit(self, s: np.ndarray) -> None:
        self._m(s.shape[1])
        self.marginals_ = EmpiricalMarginals().fit(s)

    def _score(self, s: np.ndarray) -> np.ndarray:
        z = self.marginals_.transform(s)
        m = self._m(z.shape[1])
        return -np.sort(-z, axis=1)[:, m - 1]          # m-th largest normal score

    def per_detector_thresholds(self, tpr: float = 0.95) -> np.ndarray:
        """Each detector's threshold (own units) at the vote's calibrated level: detector ``k`` votes OOD when
        ``s_k > t_k``; the input is flagged when ``quorum`` detectors vote so."""
        t = self.threshold(tpr)
        return np.array([float(self.marginals_.inverse(t, k)[0]) for k in range(self.d_)])

    def get_params(self) -> dict[str, Any]:
        return {"quorum": self.quorum}

    def _get_state(self) -> dict[str, Any]:
        return {"marginals": self.marginals_.get_state()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.marginals_ = EmpiricalMarginals().set_state(state["marginals"])
