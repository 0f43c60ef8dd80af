"""Detection metrics, one module for every detector in brittle: margins flagging non-robust inputs and OOD
detectors flagging out-of-distribution inputs.

Two entry points share the same ROC maths (scikit-learn's ``roc_curve``, ``roc_auc_score`` and
``average_precision_score``):

* `detection_metrics` — non-robust samples (``input_margin <= eps``) detected by a *small* score (the logit
  margin), for one or many ε (`Detection` per ε). Re-exported by `brittle.analysis.consistency`.
* `ood_metrics` — OOD inputs detected by a *high* score (every OOD detector: higher = more OOD), from the
  scores of in-distribution (ID) and OOD test inputs (`OODMetrics`).

Conventions for OOD (the OpenOOD / Hendrycks & Gimpel convention, stated once):

* **AUROC** — probability that a random OOD input scores higher than a random ID input (ties count 1/2); the
  same number with either class as positive.
* **AUPR-In** — average precision with **ID as positives**, ranked by ``-score``; **AUPR-Out** — with **OOD as
  positives**, ranked by ``score``.
* **FPR@95TPR** — ID inputs are the positives: the threshold accepts (``score <= t``) at least 95% of the ID
  test inputs — the smallest such set — and FPR is the share of OOD inputs it also accepts.
* **Detection error** — ``min_t 0.5·(1 − TPR(t)) + 0.5·FPR(t)`` (Liang et al., ODIN), equal class weights.
* **Threshold at a target TPR** — `threshold_at_tpr`: the ``ceil(tpr·n)``-th smallest ID score; an input is
  flagged as OOD when ``score > threshold`` (this is how the deployment monitor is calibrated on ID data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..core.validation import (
    as_bool_array,
    as_eps_array,
    as_margin_array,
    check_unit_interval,
)
from ..errors import InputError

Samples = Literal["all", "correct"]


def _select(samples: str, correct: Any, n: int) -> np.ndarray | None:
    """Boolean mask of the samples that count, or None for all."""
    if samples == "all":
        return None
    if samples != "correct":
        raise InputError(f"samples must be 'all' or 'correct', got {samples!r}", "pass samples='all' or 'correct'")
    if correct is None:
        raise InputError("samples='correct' needs the correctness of each prediction",
                         "pass correct=(pred == y) or samples='all'")
    return as_bool_array(correct, "correct", n)


# --------------------------------------------------------------------------------------------
# Shared primitives
# --------------------------------------------------------------------------------------------

def fpr_at_tpr(positive: np.ndarray, score: np.ndarray, target_tpr: float = 0.95) -> tuple[float, float, float]:
    """``(fpr, tpr, threshold)`` at the first ROC point with TPR >= ``target_tpr``, flagging ``score <= threshold``.

    The smallest FPR among the operating points whose TPR reaches the target (the standard FPR@95%TPR); the
    threshold is returned in score units. The reference's ``get_FPR_at_TPR`` (det_curve + ``np.argmin``) breaks
    ties between points of equal TPR towards the *largest* FPR, so it can report a higher FPR when negatives
    lie between two consecutive positives; brittle reports the lowest.
    """
    from sklearn.metrics import roc_curve  # lazy: slow to import
    fpr, tpr, thr = roc_curve(positive, -score, drop_intermediate=False)
    i = int(np.argmax(tpr >= target_tpr - 1e-12))
    return float(fpr[i]), float(tpr[i]), float(-thr[i])


def detection_error(positive: np.ndarray, score: np.ndarray) -> float:
    """``min_t 0.5·(1 − TPR) + 0.5·FPR`` over thresholds of ``score`` (positives flagged by *high* score)."""
    from sklearn.metrics import roc_curve  # lazy: slow to import
    fpr, tpr, _ = roc_curve(positive, score, drop_intermediate=False)
    return float(np.min(0.5 * (1 - tpr) + 0.5 * fpr))


def _scores(a: Any, what: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    try:
        s = np.asarray(a, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{what} are not numbers", f"pass {what} as a 1-D float array") from None
    if len(s) == 0:
        raise InputError(f"{what} are empty", f"pass at least one score in {what}")
    if not np.isfinite(s).all():
        raise InputError(f"{what} contain NaN or infinite values", "check the detector and its inputs")
    return s


def threshold_at_tpr(id_scores: Any, target_tpr: float = 0.95) -> float:
    """OOD threshold accepting (``score <= t``) at least ``target_tpr`` of the ID inputs: the
    ``ceil(target_tpr·n)``-th smallest ID score. Flag an input as OOD when ``score > t``."""
    s = _scores(id_scores, "id_scores")
    target_tpr = check_unit_interval(target_tpr, "target_tpr")
    k = max(1, math.ceil(target_tpr * len(s) - 1e-9))
    return float(np.sort(s)[k - 1])


# --------------------------------------------------------------------------------------------
# OOD detection
# --------------------------------------------------------------------------------------------

@dataclass
class OODMetrics:
    """ID-vs-OOD detection by a score where higher = more OOD (conventions: module docstring)."""

    n_id: int
    n_ood: int
    auroc: float
    aupr_in: float
    aupr_out: float
    fpr_at_tpr: float
    detection_error: float
    threshold: float
    target_tpr: float = 0.95
    roc_fpr: np.ndarray | None = None   # OOD as positives, ranked by score (for ROC plots)
    roc_tpr: np.ndarray | None = None

    @property
    def fpr_at_95tpr(self) -> float:
        return self.fpr_at_tpr

    def summary(self) -> dict[str, float | int]:
        return {"n_id": self.n_id, "n_ood": self.n_ood, "auroc": self.auroc, "aupr_in": self.aupr_in,
                "aupr_out": self.aupr_out, "fpr_at_tpr": self.fpr_at_tpr, "target_tpr": self.target_tpr,
                "detection_error": self.detection_error, "threshold": self.threshold}


def ood_metrics(id_scores: Any, ood_scores: Any, *, target_tpr: float = 0.95, curves: bool = False) -> OODMetrics:
    """AUROC, AUPR-In, AUPR-Out, FPR at ``target_tpr`` (ID positives), detection error and the threshold, for
    scores where higher = more OOD. ``curves=True`` keeps the ROC curve (OOD positives)."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve  # lazy: slow to import
    s_id, s_ood = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    target_tpr = check_unit_interval(target_tpr, "target_tpr")
    s = np.concatenate([s_id, s_ood])
    is_ood = np.concatenate([np.zeros(len(s_id), bool), np.ones(len(s_ood), bool)])
    auroc = float(roc_auc_score(is_ood, s))
    aupr_out = float(average_precision_score(is_ood, s))
    aupr_in = float(average_precision_score(~is_ood, -s))
    fpr, _, _ = fpr_at_tpr(~is_ood, s, target_tpr)
    thr = threshold_at_tpr(s_id, target_tpr)
    roc = roc_curve(is_ood, s) if curves else (None, None, None)
    return OODMetrics(len(s_id), len(s_ood), auroc, aupr_in, aupr_out, fpr, detection_error(is_ood, s), thr,
                      target_tpr, roc[0], roc[1])


# --------------------------------------------------------------------------------------------
# Detection of non-robust samples (margins)
# --------------------------------------------------------------------------------------------

@dataclass
class Detection:
    """Detection of non-robust samples (``input_margin <= eps``) by a small score, at one ε.

    ``threshold_at_95tpr`` is in score units: flag a sample as non-robust when ``score <= threshold``.
    Curves are sklearn's ``roc_curve`` (fpr, tpr, thresholds on ``-score``) and ``precision_recall_curve``.
    Undefined metrics are NaN with ``reason`` saying why (e.g. no non-robust sample at this ε).
    """

    eps: float
    n: int
    n_positive: int
    auroc: float
    aupr: float
    fpr_at_95tpr: float
    threshold_at_95tpr: float
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    roc_thresholds: np.ndarray
    pr_precision: np.ndarray
    pr_recall: np.ndarray
    pr_thresholds: np.ndarray
    reason: str | None = None

    @property
    def positive_rate(self) -> float:
        return self.n_positive / self.n if self.n else float("nan")

    def summary(self) -> dict[str, float | int | str | None]:
        return {"eps": self.eps, "n": self.n, "n_positive": self.n_positive, "positive_rate": self.positive_rate,
                "auroc": self.auroc, "aupr": self.aupr, "fpr_at_95tpr": self.fpr_at_95tpr,
                "threshold_at_95tpr": self.threshold_at_95tpr, "reason": self.reason}


@dataclass
class DetectionMetrics:
    """`Detection` at each ε, in the order given."""

    per_eps: list[Detection]

    def __getitem__(self, i: int) -> Detection:
        return self.per_eps[i]

    def __len__(self) -> int:
        return len(self.per_eps)

    def __iter__(self):
        return iter(self.per_eps)

    @property
    def auroc(self) -> np.ndarray:
        return np.array([d.auroc for d in self.per_eps])

    @property
    def aupr(self) -> np.ndarray:
        return np.array([d.aupr for d in self.per_eps])

    @property
    def fpr_at_95tpr(self) -> np.ndarray:
        return np.array([d.fpr_at_95tpr for d in self.per_eps])

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([d.summary() for d in self.per_eps])


def _one_detection(d_in: np.ndarray, score: np.ndarray, eps: float) -> Detection:
    from sklearn.metrics import (  # lazy: slow to import
        average_precision_score, precision_recall_curve, roc_auc_score, roc_curve)
    pos = d_in <= eps
    n, n_pos = len(pos), int(pos.sum())
    empty = np.array([])
    if n_pos == 0 or n_pos == n:
        what = "no non-robust sample (input_margin <= eps)" if n_pos == 0 else "every sample is non-robust"
        nan = float("nan")
        return Detection(float(eps), n, n_pos, nan, nan, nan, nan, empty, empty, empty, empty, empty, empty,
                         reason=f"{what} at eps={eps:g}: detection metrics are undefined")
    neg_score = -score
    fpr, tpr, thr = roc_curve(pos, neg_score)
    prec, rec, pthr = precision_recall_curve(pos, neg_score)
    f95, _, t95 = fpr_at_tpr(pos, score, 0.95)
    return Detection(float(eps), n, n_pos, float(roc_auc_score(pos, neg_score)),
                     float(average_precision_score(pos, neg_score)), f95, t95,
                     fpr, tpr, -thr, prec, rec, -pthr)


def detection_metrics(input_margin: Any, score: Any, eps: Any, *, correct: Any = None,
                      samples: Samples = "all") -> DetectionMetrics:
    """How well a small ``score`` (the logit margin) detects non-robust samples at each ε.

    Positive class: ``input_margin <= eps`` (censored ``inf`` margins are never positive). The positive-class
    score is ``-score`` (orientation fixed in advance). AUROC is sklearn's ``roc_auc_score``, AUPR is
    ``average_precision_score``, FPR@95%TPR is the FPR of the first ROC point reaching 95% TPR. When every or no
    sample is positive at some ε, that ε gets NaN metrics and a ``reason`` instead of an error.

    Note that an attack's input margin is an upper bound: samples it calls robust may still be non-robust.
    """
    d_in = as_margin_array(input_margin, "input_margin")
    s = as_margin_array(score, "score", n=len(d_in), allow_inf=False, nonnegative=False)
    eps_arr = as_eps_array(eps)
    mask = _select(samples, correct, len(d_in))
    if mask is not None:
        d_in, s = d_in[mask], s[mask]
        if len(d_in) == 0:
            raise InputError("no correctly classified sample", "pass samples='all' or more data")
    return DetectionMetrics([_one_detection(d_in, s, float(e)) for e in eps_arr])
