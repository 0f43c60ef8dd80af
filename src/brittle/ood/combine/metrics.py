"""AUROC and FPR at a TPR for a multi-dimensional detector, over its strategy's nested acceptance regions.

A fitted strategy turns ``R^d`` into a family of nested **acceptance regions** ``A_t = {s : score(s) <= t}``
(lower orthant-like sets for the CDFs, center-outward contours for optimal transport, quorum regions for the
vote). For each ``t``, ``TPR(t)`` is the share of ID test vectors inside ``A_t`` and ``FPR(t)`` the share of
OOD vectors inside it (ID = positives, the OpenOOD convention of `brittle.analysis.detection`). Sweeping
``t`` over all regions gives the ROC curve; its area is the multi-dimensional **AUROC** (the probability that
a random OOD vector lies outside the smallest region holding a random ID vector, ties ½) and **FPR@TPR** is the
FPR of the smallest region holding ``tpr`` of the ID test vectors.

Because the regions are indexed by the strategy's score, both reduce to the scalar metrics of that score — and
for ``d = 1`` the vote and copula scores are strictly increasing functions of the one detector's score, so the
multi-dimensional AUROC and FPR@TPR equal the scalar ones of the detector itself exactly (tested); the ECDF is a
step function of the fit sample (inputs between two consecutive fit values, or beyond the extremes, tie), so
it equals them up to that resolution. The center-outward
regions are two-sided intervals ``{|2F̂ − 1| ≤ t}`` in one dimension, so its metrics differ by design.

`calibrated` adds the deployment view: the region calibrated on the **ID validation** data at ``tpr``
(`Combiner.threshold`) and the TPR/FPR it actually achieves on the test data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from .base import Combiner, check_score_matrix, check_tpr


@dataclass
class MultiDimMetrics:
    strategy: str
    d: int
    n_id: int
    n_ood: int
    auroc: float
    fpr_at_tpr: float
    target_tpr: float
    calibrated_threshold: float
    calibrated_tpr: float
    calibrated_fpr: float

    def summary(self) -> dict[str, Any]:
        return dict(self.__dict__)


def region_roc(id_score: np.ndarray, ood_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tpr, fpr, t)`` of the regions ``{score <= t}`` at every distinct threshold (ID = positives)."""
    y = np.r_[np.ones(len(id_score), bool), np.zeros(len(ood_score), bool)]
    fpr, tpr, thr = roc_curve(y, -np.r_[id_score, ood_score], drop_intermediate=False)
    return tpr, fpr, -thr


def multidim_metrics(combiner: Combiner, scores_id_test: Any, scores_ood: Any, *,
                     tpr: float = 0.95) -> MultiDimMetrics:
    """Metrics of a fitted strategy on ID test and OOD score matrices ``(N, d)`` (columns: higher = more OOD)."""
    combiner.check_fitted()
    tpr = check_tpr(tpr)
    sid = combiner.score(check_score_matrix(scores_id_test, "scores_id_test", d=combiner.d_))
    sood = combiner.score(check_score_matrix(scores_ood, "scores_ood", d=combiner.d_))
    y = np.r_[np.zeros(len(sid)), np.ones(len(sood))]
    auroc = float(roc_auc_score(y, np.r_[sid, sood]))
    # smallest region holding >= tpr of the ID test vectors: t = the ceil(tpr·n)-th smallest ID score
    k = max(1, math.ceil(tpr * len(sid) - 1e-9))
    t = float(np.sort(sid)[k - 1])
    fpr = float(np.mean(sood <= t))
    tc = combiner.threshold(tpr)
    return MultiDimMetrics(combiner.name, combiner.d_, len(sid), len(sood), auroc, fpr, tpr, tc,
                           float(np.mean(sid <= tc)), float(np.mean(sood <= tc)))
