"""Margin consistency: how well the logit margin orders samples like the input margin, and what follows.

Array in, array out; no model is needed here.

* `margin_correlations` — Kendall τ-b (the paper's measure of margin consistency), Spearman ρ and Pearson r
  between input margins and logit margins, each with a bootstrap confidence interval.
* `detection_metrics` (defined in `brittle.analysis.detection`, shared with the OOD detectors; re-exported
  here) — detection of non-robust samples (``input_margin <= eps``) by thresholding the logit
  margin: AUROC, AUPR, FPR at 95% TPR and the ROC / PR curves, for one or many ε.
* `robust_accuracy` — robust accuracy implied by margins at each ε, bracketed by attack upper bounds and
  certified lower bounds of the input margin.

Conventions (decided once, used everywhere in brittle):

* **Censoring.** An input margin of ``inf`` means the attack found no adversarial example within its budget:
  the true margin is larger than anything it tried. In rank statistics (Kendall, Spearman) ``inf`` is the
  largest value and all ``inf`` are tied with one another. Pearson r is computed on the finite pairs only
  (capping at an arbitrary value would change r with the cap); its ``n`` says how many pairs it used.
  For detection, a censored sample is robust at every finite ε.
* **Orientation.** A small logit margin means vulnerable. The score of the positive class (non-robust) is
  ``-score``, fixed in advance and never chosen from the labels (the reference notebook flips the sign when
  the correlation is negative; brittle does not, so an anti-consistent model shows AUROC < 0.5).
* **Which samples count.** The reference code computes input margins around the *predicted* class
  (``unsup_version``) and measures τ and detection on every attacked sample, correct or not; robust accuracy
  counts a sample only when it is correct *and* robust. brittle does the same by default
  (``samples="all"``); ``samples="correct"`` restricts correlations and detection to correctly classified
  samples (pass ``correct``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import InputError
from ..core.validation import (as_bool_array, as_eps_array, as_margin_array, check_nonnegative_int,
                               check_unit_interval)
# detection metrics live in one module shared with the OOD detectors; re-exported here unchanged
from .detection import (Detection, DetectionMetrics, _one_detection, _select, detection_metrics,  # noqa: F401
                        fpr_at_tpr)

Samples = Literal["all", "correct"]

#: Above this many pairs, each Kendall bootstrap replicate is computed on a resample of this size and its
#: deviation rescaled by sqrt(m / n) (m-out-of-n bootstrap; τ-b is asymptotically normal with variance ∝ 1/n).
KENDALL_BOOT_SIZE = 2000


# --------------------------------------------------------------------------------------------
# Validation shared by the analysis modules
# --------------------------------------------------------------------------------------------

def _rank_ready(a: np.ndarray) -> np.ndarray:
    """Replace ``inf`` by one value above every finite value: same ranks, ties among infs kept."""
    inf = np.isinf(a)
    if not inf.any():
        return a
    finite = a[~inf]
    top = (finite.max() if len(finite) else 0.0)
    out = a.copy()
    out[inf] = top + 1.0 + abs(top)
    return out


# --------------------------------------------------------------------------------------------
# Correlations
# --------------------------------------------------------------------------------------------

@dataclass
class Correlation:
    """One correlation coefficient with its bootstrap confidence interval (NaN when undefined)."""

    name: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    pvalue: float = float("nan")

    def __str__(self) -> str:
        return f"{self.name} = {self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] (n={self.n})"


@dataclass
class MarginCorrelations:
    """Kendall τ-b, Spearman ρ and Pearson r between input margins and logit margins."""

    kendall: Correlation
    spearman: Correlation
    pearson: Correlation
    n: int
    n_censored: int
    n_boot: int
    ci: float
    notes: list[str] = field(default_factory=list)

    @property
    def tau(self) -> float:
        """Kendall τ-b, the paper's measure of margin consistency."""
        return self.kendall.value

    def to_frame(self) -> pd.DataFrame:
        rows = [self.kendall, self.spearman, self.pearson]
        return pd.DataFrame({"metric": [r.name for r in rows], "value": [r.value for r in rows],
                             "ci_low": [r.ci_low for r in rows], "ci_high": [r.ci_high for r in rows],
                             "n": [r.n for r in rows], "pvalue": [r.pvalue for r in rows]})


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of two (B, m) arrays (NaN for constant rows)."""
    xc = x - x.mean(1, keepdims=True)
    yc = y - y.mean(1, keepdims=True)
    den = np.sqrt((xc * xc).sum(1) * (yc * yc).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(1) / den
    r[den == 0] = np.nan
    return r


def _percentile_ci(point: float, reps: np.ndarray, ci: float, scale: float = 1.0) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, deviations rescaled by ``scale``, clipped to [-1, 1]."""
    reps = reps[np.isfinite(reps)]
    if not np.isfinite(point) or len(reps) < 2:
        return float("nan"), float("nan")
    lo_q, hi_q = np.quantile(reps, [(1 - ci) / 2, (1 + ci) / 2])
    if scale != 1.0:  # m-out-of-n: rescale deviations from the replicates' centre
        lo_q, hi_q = point + scale * (lo_q - point), point + scale * (hi_q - point)
    return float(np.clip(lo_q, -1, 1)), float(np.clip(hi_q, -1, 1))


def _reaching(point: float, lo: float, hi: float) -> tuple[float, float]:
    """``(lo, hi)`` widened, where needed, to contain ``point`` (unchanged when any of them is NaN)."""
    if not (math.isfinite(point) and math.isfinite(lo) and math.isfinite(hi)):
        return lo, hi
    return min(lo, point), max(hi, point)


def _boot_ranks(dense: np.ndarray, levels: int, idx: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) within each bootstrap resample, without sorting.

    ``dense`` is the dense rank (0..levels-1) of every original sample and ``idx`` a (B, m) index matrix; each
    resampled value's rank is (#values below it) + (#values equal to it + 1) / 2, counted per row.
    """
    b, m = idx.shape
    r = dense[idx]
    counts = np.bincount((r + levels * np.arange(b)[:, None]).ravel(), minlength=b * levels).reshape(b, levels)
    below = np.cumsum(counts, axis=1) - counts
    rows = np.arange(b)[:, None]
    return below[rows, r] + (counts[rows, r] + 1) / 2.0


def _boot_indices(rng: np.random.Generator, n: int, size: int, count: int) -> np.ndarray:
    return rng.integers(0, n, size=(count, size))


def margin_correlations(input_margin: Any, logit_margin: Any, *, n_boot: int = 1000, seed: int = 0,
                        ci: float = 0.95, correct: Any = None, samples: Samples = "all",
                        kendall_boot_size: int | None = KENDALL_BOOT_SIZE) -> MarginCorrelations:
    """Kendall τ-b, Spearman ρ and Pearson r of ``(input_margin, logit_margin)`` with bootstrap CIs.

    Args:
        input_margin: per-sample input margin (>= 0; ``inf`` = censored, see module docstring).
        logit_margin: per-sample logit margin, or any finite score where larger means more robust
            (a pseudo-margin); negative values are allowed here.
        n_boot: bootstrap replicates (percentile intervals); 0 skips the intervals (NaN).
        seed: seed of the resampling.
        ci: confidence level of the intervals, in (0, 1).
        correct, samples: which samples count (``"all"``, the paper's choice, or ``"correct"``).
        kendall_boot_size: above this many samples, each Kendall replicate uses a resample of this size and
            its deviation is rescaled by ``sqrt(m / n)`` (m-out-of-n bootstrap), so 1000 replicates on 10k
            points take well under a second; None resamples all ``n`` (about 2 ms per replicate at 10k).
            Spearman and Pearson replicates are vectorised and always use all ``n`` samples.

    The point estimates are exactly ``scipy.stats.kendalltau`` (τ-b), ``spearmanr`` and ``pearsonr``.
    """
    from scipy import stats  # lazy: slow to import
    d_in = as_margin_array(input_margin, "input_margin", min_len=2)
    score = as_margin_array(logit_margin, "logit_margin", n=len(d_in), allow_inf=False, nonnegative=False)
    check_nonnegative_int(n_boot, "n_boot", "pass e.g. n_boot=1000")
    ci = check_unit_interval(ci, "ci")
    if ci >= 1:
        raise InputError("ci must be < 1", "pass e.g. ci=0.95")
    mask = _select(samples, correct, len(d_in))
    if mask is not None:
        d_in, score = d_in[mask], score[mask]
        if len(d_in) < 2:
            raise InputError(f"only {len(d_in)} correctly classified sample(s)", "pass more samples or samples='all'")
    n = len(d_in)
    n_cens = int(np.isinf(d_in).sum())
    notes: list[str] = []
    x = _rank_ready(d_in)
    rng = np.random.default_rng(seed)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        kt = stats.kendalltau(x, score)
        sp = stats.spearmanr(x, score)
        fin = np.isfinite(d_in)
        n_fin = int(fin.sum())
        pr = stats.pearsonr(d_in[fin], score[fin]) if n_fin >= 2 else None
    tau, rho = float(kt.statistic), float(sp.statistic)
    r = float(pr.statistic) if pr is not None else float("nan")
    if np.isnan(tau):
        notes.append("input or logit margins are constant: correlations are undefined (NaN)")
    if n_cens:
        notes.append(f"{n_cens} censored (inf) input margin(s): ranked above all finite ones (Kendall, Spearman), "
                     "left out of Pearson")

    k_lo = k_hi = s_lo = s_hi = p_lo = p_hi = float("nan")
    if n_boot > 0:
        # Kendall: scipy per replicate, on m-out-of-n resamples when n is large.
        m = n if kendall_boot_size is None or n <= kendall_boot_size else int(kendall_boot_size)
        idx = _boot_indices(rng, n, m, n_boot)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            k_reps = np.array([stats.kendalltau(x[i], score[i]).statistic for i in idx], dtype=float)
        k_lo, k_hi = _percentile_ci(tau, k_reps, ci, scale=math.sqrt(m / n) if m < n else 1.0)
        if m < n:
            notes.append(f"Kendall CI from {n_boot} m-out-of-n replicates (m={m}, rescaled by sqrt(m/n))")
        # Spearman and Pearson: vectorised in chunks of replicates.
        s_reps, p_reps = [], []
        x_dense = stats.rankdata(x, method="dense").astype(np.int64) - 1
        y_dense = stats.rankdata(score, method="dense").astype(np.int64) - 1
        x_levels, y_levels = int(x_dense.max()) + 1, int(y_dense.max()) + 1
        chunk = max(1, 2_000_000 // max(n, 1))
        for lo in range(0, n_boot, chunk):
            b = min(chunk, n_boot - lo)
            ii = _boot_indices(rng, n, n, b)
            xr = _boot_ranks(x_dense, x_levels, ii)
            yr = _boot_ranks(y_dense, y_levels, ii)
            s_reps.append(_pearson_rows(xr, yr))
            if n_fin >= 2:
                jj = _boot_indices(rng, n_fin, n_fin, b)
                p_reps.append(_pearson_rows(d_in[fin][jj], score[fin][jj]))
        s_lo, s_hi = _percentile_ci(rho, np.concatenate(s_reps), ci)
        if p_reps:
            p_lo, p_hi = _percentile_ci(r, np.concatenate(p_reps), ci)
        # Resamples without two distinct values give no coefficient and are left out, so with few distinct values
        # (heavy censoring, ties) the replicates describe the resamples that kept them: the interval can then
        # miss its own point estimate. It is widened to reach it, and a note says so.
        widened = []
        for name, value, (lo_, hi_) in (("Kendall", tau, (k_lo, k_hi)), ("Spearman", rho, (s_lo, s_hi)),
                                        ("Pearson", r, (p_lo, p_hi))):
            if math.isfinite(value) and math.isfinite(lo_) and not lo_ - 1e-9 <= value <= hi_ + 1e-9:
                widened.append(f"{name} [{lo_:.3f}, {hi_:.3f}]")  # (rounding-level misses are widened quietly)
        k_lo, k_hi = _reaching(tau, k_lo, k_hi)
        s_lo, s_hi = _reaching(rho, s_lo, s_hi)
        p_lo, p_hi = _reaching(r, p_lo, p_hi)
        if widened:
            notes.append(f"the bootstrap interval of {', '.join(widened)} excluded its point estimate (typical of "
                         "few distinct values, e.g. heavy censoring: resamples with a constant margin give no "
                         "coefficient and are left out); widened to include the point estimate")
    return MarginCorrelations(
        kendall=Correlation("kendall_tau_b", tau, k_lo, k_hi, n, float(kt.pvalue)),
        spearman=Correlation("spearman_rho", rho, s_lo, s_hi, n, float(sp.pvalue)),
        pearson=Correlation("pearson_r", r, p_lo, p_hi, n_fin, float(pr.pvalue) if pr is not None else float("nan")),
        n=n, n_censored=n_cens, n_boot=int(n_boot), ci=ci, notes=notes)


# --------------------------------------------------------------------------------------------
# Robust accuracy implied by margins
# --------------------------------------------------------------------------------------------

def share_robust(margins: np.ndarray, correct: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """``mean(correct & (margin > ε))`` for every ε (any order): the one robust-accuracy-from-margins kernel
    behind `robust_accuracy_from_margins`, `brittle.analysis.consistency.robust_accuracy`, the audit summary
    and the report's curves. Arrays are assumed checked (1-D, same length, no NaN)."""
    kept = np.sort(np.asarray(margins, dtype=float)[np.asarray(correct, dtype=bool)])
    eps = np.asarray(eps, dtype=float)
    return (kept.size - np.searchsorted(kept, eps, side="right")) / max(len(correct), 1)


def robust_accuracy(eps: Any, correct: Any, attack_margin: Any = None, certified_margin: Any = None,
                    *, tol: float = 1e-6) -> pd.DataFrame:
    """Robust accuracy at each ε implied by per-sample input-margin bounds, as a bracket.

    A sample counts when it is correctly classified *and* robust at ε (true input margin > ε); the
    denominator is every sample.

    * ``attack_margin`` — upper bounds ``u >= d`` from attacks (``inf`` = nothing found). ``u <= ε`` proves a
      sample non-robust, but ``u > ε`` proves nothing, so ``robust_acc_attack = mean(correct & u > ε)`` is an
      **upper bound** on the true robust accuracy (what attack benchmarks report).
    * ``certified_margin`` — lower bounds ``l <= d`` from verifiers. ``l > ε`` proves robustness, so
      ``robust_acc_certified = mean(correct & l > ε)`` is a **lower bound** on the true robust accuracy.

    Returns a DataFrame with columns ``eps``, ``clean_accuracy``, ``robust_acc_attack`` (upper bound),
    ``robust_acc_certified`` (lower bound) and ``gap`` (their difference), NaN where a bound is not given.
    """
    eps_arr = as_eps_array(eps)
    if attack_margin is None and certified_margin is None:
        raise InputError("neither attack_margin nor certified_margin was given",
                         "pass attack upper bounds and/or certified lower bounds of the input margin")
    ref = attack_margin if attack_margin is not None else certified_margin
    n = len(np.asarray(ref).reshape(-1))
    corr = as_bool_array(correct, "correct", n)
    upper = as_margin_array(attack_margin, "attack_margin", n=n) if attack_margin is not None else None
    lower = (as_margin_array(certified_margin, "certified_margin", n=n)
             if certified_margin is not None else None)
    if upper is not None and lower is not None:
        bad = lower > upper * (1 + tol) + tol
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"certified_margin exceeds attack_margin at {int(bad.sum())} sample(s) "
                             f"(index {i}: {lower[i]:.4g} > {upper[i]:.4g}); a lower bound cannot exceed an upper bound",
                             "check that the two arrays are in the same sample order and the same norm")
    nan = np.full(len(eps_arr), np.nan)
    ra_up = np.array([np.mean(corr & (upper > e)) for e in eps_arr]) if upper is not None else nan
    ra_lo = np.array([np.mean(corr & (lower > e)) for e in eps_arr]) if lower is not None else nan
    return pd.DataFrame({"eps": eps_arr, "clean_accuracy": float(corr.mean()), "robust_acc_attack": ra_up,
                         "robust_acc_certified": ra_lo, "gap": ra_up - ra_lo})
