"""Robust accuracy of a large set from logit margins and attacks on only ``n`` of its points.

Robust accuracy at ε is ``mean(correct & input_margin > ε)`` over all ``N`` points. Logit margins and
correctness are cheap for every point; input margins (attacks) are expensive. `estimate_robust_accuracy`
attacks ``n`` points and extrapolates with the logit margin, by one of three methods:

``"threshold"`` — the paper's method (``SampleEfficientRobustAccuracy`` in the authors' notebook code):
    draw ``n`` points uniformly from all ``N``; label them non-robust when ``input_margin <= ε``; for each
    target recall α in (0.80, 0.825, ..., 0.95, 0.99) take the logit-margin threshold λ_α = the smallest
    logit margin at which the recall of the subset's non-robust points reaches α (``det_curve`` on
    ``-logit_margin``, as their ``get_FPR_at_TPR``, with its tie-breaking; see `paper_threshold`),
    and keep the λ_α whose implied subset robust accuracy
    ``mean(correct & logit_margin > λ_α)`` is closest to the subset's measured robust accuracy (first α on a tie;
    a fixed ``alpha`` skips the search). Predict non-robust ⇔ ``logit_margin <= λ`` on the ``N − n`` points
    that were not attacked. One deviation from the paper, which predicts all ``N`` points from λ: the ``n``
    attacked points count with their measured outcome (they are known), so with ``n >= N`` the estimate is
    exact. brittle adds a bootstrap CI (resampling the subset, repeating the whole procedure); the paper gives
    none, and the method has no coverage guarantee (λ is biased when margin consistency is imperfect).

``"isotonic"`` — brittle's default: attack ``n`` *correctly classified* points (a misclassified point is
    non-robust whatever its margin, so attacking it is wasted), fit ``P(robust | logit margin)`` by weighted
    isotonic regression (increasing), and estimate ``(Σ observed robust + Σ_unattacked P̂(robust | lm)) / N``.
    Isotonic regression is the L2 projection onto increasing functions, which contain the constants, so the
    estimate stays unbiased in the large-sample limit even when margin consistency is weak (it then loses
    precision, not validity). CI: normal interval from a (stratified) bootstrap of the fit, plus the binomial
    variance of the unattacked points' own outcomes. The interval is approximate: the bootstrap holds the
    attacked points (and the adaptive allocation) fixed, so it is too narrow at small n and most with
    ``selection="adaptive"`` — 87–94% coverage for a nominal 95% in simulations with n = 50–200 (random
    selection 91–94%, adaptive 87–91%; docs/margin-consistency.md, section 4). Use ``method="stratified"``
    (random selection at small n: 94–98% there) when the interval's coverage matters.

``"stratified"`` — stratified sampling over ``n_strata`` equal-size logit-margin quantile strata of the
    correct points, estimate ``Σ_h N_h p̂_h / N`` with the textbook stratified variance (finite-population
    correction; per-stratum proportions smoothed by (k + ½)/(n + 1) in the variance only, so pure strata do
    not claim zero variance) and a normal CI.

``selection="adaptive"`` (isotonic and stratified) spends half the budget on a proportional pilot, then
    allocates the rest to strata in proportion to ``N_h·sqrt(p̃_h(1 − p̃_h))`` (Neyman allocation): points
    whose logit margin is near the robust/non-robust transition are attacked more, clear-cut ones less.
    Within a stratum points are still drawn uniformly, and the estimators weight them by ``N_h / n_h``.

Input margins come either as a full array (simulation: the truth and the error are reported) or as a
callback ``attack_fn(indices) -> input margins of those points`` (real use; called once, twice when adaptive).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import isotonic_regression

from ..core.validation import (
    as_bool_array,
    as_margin_array,
    check_nonnegative_int,
    check_positive,
    check_unit_interval,
)
from ..errors import InputError

Method = Literal["isotonic", "threshold", "stratified"]
Selection = Literal["random", "adaptive"]
AttackFn = Callable[[np.ndarray], Any]

#: Target recalls searched by the paper's threshold method (``determine_lda`` in the authors' code).
PAPER_ALPHAS = (0.80, 0.825, 0.85, 0.875, 0.90, 0.925, 0.95, 0.99)
ESTIMATION_METHODS = ("isotonic", "threshold", "stratified")


@dataclass
class SubsetEstimate:
    """Robust accuracy of all points estimated from ``n_attacked`` attacked points.

    ``threshold`` is the logit-margin threshold λ of the threshold method (non-robust ⇔ logit margin <= λ),
    None for the other methods. ``truth`` and ``error = estimate - truth`` are set when full input margins
    were supplied. ``indices`` are the attacked points.
    """

    estimate: float
    ci_low: float
    ci_high: float
    n_attacked: int
    method: str
    selection: str
    eps: float
    n_total: int
    indices: np.ndarray
    threshold: float | None = None
    truth: float | None = None
    error: float | None = None

    @property
    def covered(self) -> bool | None:
        """Whether the CI contains the truth (None when the truth is unknown)."""
        return None if self.truth is None else bool(self.ci_low - 1e-12 <= self.truth <= self.ci_high + 1e-12)

    def __str__(self) -> str:
        s = (f"robust accuracy at eps={self.eps:g}: {self.estimate:.4f} [{self.ci_low:.4f}, {self.ci_high:.4f}] "
             f"({self.method}, {self.n_attacked}/{self.n_total} attacked)")
        return s + (f", truth {self.truth:.4f}" if self.truth is not None else "")


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

def fit_isotonic(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted increasing isotonic regression of ``y`` on ``x``: ``(knots, fitted values)``.

    Same fit as ``sklearn.isotonic.IsotonicRegression(increasing=True)``: ties in ``x`` are merged into their
    weighted mean, then the pool-adjacent-violators fit; predict with `predict_isotonic` (linear
    interpolation between knots, constant outside).
    """
    w = np.ones(len(x)) if weight is None else np.asarray(weight, dtype=float)
    order = np.argsort(x, kind="stable")
    xs, ys, ws = x[order], y[order].astype(float), w[order]
    ux, start = np.unique(xs, return_index=True)
    wsum = np.add.reduceat(ws, start)
    ymean = np.add.reduceat(ws * ys, start) / wsum
    fitted = isotonic_regression(ymean, weights=wsum, increasing=True).x
    return ux, np.clip(fitted, 0.0, 1.0)


def predict_isotonic(knots: np.ndarray, fitted: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Evaluate a `fit_isotonic` fit at ``x``."""
    return np.interp(x, knots, fitted)


def paper_threshold(logit_margin: np.ndarray, nonrobust: np.ndarray, correct: np.ndarray | None,
                    alpha: float | None = None) -> float:
    """The paper's logit-margin threshold λ on an attacked subset (non-robust ⇔ logit margin <= λ).

    Exactly the reference's ``get_FPR_at_TPR(y, -logit_margin, α)`` threshold: among the operating points
    ``flag lm <= v`` (v a subset logit margin) that ``sklearn.metrics.det_curve`` keeps — it drops those past
    full recall and all but the last of those with as few false alarms as the very first — take the ones whose
    recall is the smallest recall >= α, and of these the *largest* v (``np.argmin`` returns the first of equal
    values in det_curve's order). λ_α is therefore the smallest subset logit margin reaching recall α, moved up
    to just below the next non-robust point's logit margin. ``-inf`` when the subset has no non-robust point. With ``alpha`` None, α is searched over `PAPER_ALPHAS`
    so that ``mean(correct & logit_margin > λ_α)`` on the subset is closest to the subset's robust accuracy
    ``mean(correct & ~nonrobust)`` (first α on a tie).
    """
    pos = np.sort(logit_margin[nonrobust])
    if len(pos) == 0:
        return -math.inf
    neg = np.sort(logit_margin[~nonrobust])
    vals = np.unique(logit_margin)  # the operating points: flag lm <= v
    tp = np.searchsorted(pos, vals, side="right")
    fp = np.searchsorted(neg, vals, side="right")
    tpr = 1 - (len(pos) - tp) / len(pos)  # as det_curve computes it (1 - fnr)
    first = int(np.flatnonzero(fp == fp[0])[-1])
    kept = (np.arange(len(vals)) >= first) & (vals <= pos[-1])

    def lam(a: float) -> float:
        reach = kept & (tpr >= a)
        lowest = tpr[reach].min()
        return float(vals[reach & (tpr == lowest)].max())

    if alpha is not None:
        return lam(alpha)
    corr = np.ones(len(logit_margin), bool) if correct is None else correct
    rob_subset = np.mean(corr & ~nonrobust)
    best, best_gap = -math.inf, math.inf
    for a in PAPER_ALPHAS:
        t = lam(a)
        gap = abs(rob_subset - np.mean(corr & (logit_margin > t)))
        if gap < best_gap:
            best, best_gap = t, gap
    return best


def _strata(lm_pop: np.ndarray, n_strata: int) -> list[np.ndarray]:
    """Equal-size strata of population positions by logit-margin rank (ties split by position)."""
    order = np.argsort(lm_pop, kind="stable")
    return [s for s in np.array_split(order, n_strata) if len(s)]


def _allocate(sizes: np.ndarray, n: int, share: np.ndarray, minimum: int) -> np.ndarray:
    """Integer allocation of ``n`` draws to strata ∝ ``share``, at least ``minimum`` each, at most ``sizes``."""
    alloc = np.minimum(sizes, minimum)
    left = n - int(alloc.sum())
    while left > 0:
        room = sizes - alloc
        open_ = room > 0
        if not open_.any():
            break
        w = np.where(open_, share, 0.0)
        if w.sum() <= 0:
            w = open_.astype(float)
        ideal = left * w / w.sum()
        add = np.minimum(np.floor(ideal).astype(int), room)
        if add.sum() == 0:  # largest remainders get one each
            rem = np.where(open_, ideal - np.floor(ideal), -1.0)
            for i in np.argsort(-rem)[:left]:
                if room[i] > 0:
                    add[i] += 1
        add = np.minimum(add, room)
        alloc += add
        left -= int(add.sum())
    return alloc


def _get_margins(source: Any, idx: np.ndarray) -> np.ndarray:
    if callable(source):
        out = source(idx.copy())
        return as_margin_array(out, "input margins returned by attack_fn", n=len(idx))
    return source[idx]


# --------------------------------------------------------------------------------------------
# The estimators
# --------------------------------------------------------------------------------------------

def _threshold_method(lm, correct, source, eps, n, rng, alpha, n_boot, ci):
    N = len(lm)
    idx = np.sort(rng.choice(N, size=min(n, N), replace=False))
    m = _get_margins(source, idx)
    nonrob = m <= eps
    corr_sub = correct[idx]
    lam = paper_threshold(lm[idx], nonrob, corr_sub, alpha)
    measured = int(np.sum(corr_sub & ~nonrob))  # the attacked points' own outcomes
    unattacked = np.ones(N, bool)
    unattacked[idx] = False
    lm_correct_sorted = np.sort(lm[correct & unattacked])

    def population(t: float) -> float:  # (measured + #{unattacked: correct & lm > t}) / N, by binary search
        return (measured + len(lm_correct_sorted) - np.searchsorted(lm_correct_sorted, t, side="right")) / N

    est = population(lam)
    lo = hi = float("nan")
    if n_boot > 0 and len(idx) > 1:
        reps = np.empty(n_boot)
        for b in range(n_boot):
            j = rng.integers(0, len(idx), len(idx))
            reps[b] = population(paper_threshold(lm[idx][j], nonrob[j], corr_sub[j], alpha))
        lo, hi = np.quantile(reps, [(1 - ci) / 2, (1 + ci) / 2])
        lo, hi = min(lo, est), max(hi, est)
    return est, float(lo), float(hi), idx, lam


def _draw(lm_pop: np.ndarray, source_for_pop: Callable[[np.ndarray], np.ndarray], n: int, eps: float,
          rng: np.random.Generator, selection: str, n_strata: int
          ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Attack ``n`` population positions, stratified; returns per stratum: members, attacked, robust flags."""
    strata = _strata(lm_pop, n_strata)
    sizes = np.array([len(s) for s in strata])
    minimum = 2 if n >= 2 * len(strata) else (1 if n >= len(strata) else 0)
    if selection == "random":
        alloc = _allocate(sizes, n, sizes.astype(float), minimum)
        phases = [alloc]
    else:
        n1 = max(min(n, minimum * len(strata)), n // 2)
        phases = [_allocate(sizes, n1, sizes.astype(float), minimum)]
    perm = [rng.permutation(s) for s in strata]
    taken = np.zeros(len(strata), int)
    attacked: list[list[np.ndarray]] = [[] for _ in strata]
    robust: list[list[np.ndarray]] = [[] for _ in strata]

    def run(alloc: np.ndarray) -> None:
        new = [perm[h][taken[h]:taken[h] + alloc[h]] for h in range(len(strata))]
        flat = np.concatenate(new) if new else np.array([], int)
        if len(flat) == 0:
            return
        r = source_for_pop(flat) > eps
        pos = 0
        for h, a in enumerate(new):
            attacked[h].append(a)
            robust[h].append(r[pos:pos + len(a)])
            pos += len(a)
        taken[:] += alloc

    run(phases[0])
    if selection == "adaptive":
        left = n - int(taken.sum())
        if left > 0:
            k = np.array([sum(int(x.sum()) for x in robust[h]) for h in range(len(strata))])
            p = (k + 0.5) / (taken + 1.0)
            share = sizes * np.sqrt(p * (1 - p))
            run(_allocate(sizes - taken, left, share, 0))
    att = [np.concatenate(a) if a else np.array([], int) for a in attacked]
    rob = [np.concatenate(r) if r else np.array([], bool) for r in robust]
    return strata, att, rob


def _stratified_estimate(strata, att, rob, N: int, ci: float) -> tuple[float, float, float]:
    z = stats.norm.ppf((1 + ci) / 2)
    est = var = 0.0
    for s, a, r in zip(strata, att, rob):
        Nh, nh = len(s), len(a)
        if nh == 0:  # unsampled stratum (budget below the number of strata): bracket it fully
            var += (Nh / N) ** 2 * 0.25
            est += Nh / N * 0.5
            continue
        k = int(r.sum())
        est += Nh / N * k / nh
        if nh < Nh:
            pt = (k + 0.5) / (nh + 1.0)
            s2 = pt * (1 - pt) * (nh / (nh - 1) if nh > 1 else 1.0)
            var += (Nh / N) ** 2 * (1 - nh / Nh) * s2 / nh
    half = z * math.sqrt(var)
    return est, est - half, est + half


def _isotonic_estimate(lm_pop, strata, att, rob, N: int, ci: float, n_boot: int,
                       rng: np.random.Generator) -> tuple[float, float, float]:
    idx = np.concatenate(att)
    r = np.concatenate(rob).astype(float)
    w = np.concatenate([np.full(len(a), len(s) / len(a)) for s, a in zip(strata, att) if len(a)])
    unatt = np.ones(len(lm_pop), bool)
    unatt[idx] = False
    lm_un = lm_pop[unatt]
    observed = float(r.sum())

    def estimate(i: np.ndarray) -> tuple[float, np.ndarray]:
        knots, fitted = fit_isotonic(lm_pop[idx[i]], r[i], w[i])
        p = predict_isotonic(knots, fitted, lm_un)
        return (observed + float(p.sum())) / N, p

    est, p_hat = estimate(np.arange(len(idx)))
    z = stats.norm.ppf((1 + ci) / 2)
    # Outcome variance of the unattacked points themselves (smoothed away from 0 / 1 like the strata).
    n_att = len(idx)
    p_s = (p_hat * n_att + 0.5) / (n_att + 1.0)
    var = float((p_s * (1 - p_s)).sum()) / N ** 2
    if n_boot > 0 and n_att > 1:
        offsets = np.cumsum([0] + [len(a) for a in att])[:-1]
        reps = np.empty(n_boot)
        for b in range(n_boot):
            i = np.concatenate([o + rng.integers(0, len(a), len(a)) for o, a in zip(offsets, att) if len(a)])
            reps[b] = estimate(i)[0]
        var += float(np.var(reps, ddof=1))
    half = z * math.sqrt(var)
    return est, est - half, est + half


#: below this many attacked points `estimate_robust_accuracy`'s isotonic interval is warned about
SMALL_ISOTONIC_N = 20


def estimate_robust_accuracy(logit_margin: Any, correct: Any, input_margins: Any, eps: float, n: int, *,
                             method: Method = "isotonic", selection: Selection = "random", seed: int = 0,
                             ci: float = 0.95, n_boot: int = 200, alpha: float | None = None,
                             n_strata: int | None = None) -> SubsetEstimate:
    """Estimate robust accuracy at ``eps`` on all points, attacking only ``n`` of them.

    Args:
        logit_margin: logit margin of every point (cheap: one forward pass).
        correct: whether each point is correctly classified (None: count every point as correct, i.e.
            estimate the fraction of robust points).
        input_margins: either the input margin of every point (simulation) or a callback
            ``attack_fn(indices) -> input margins`` computing them for the chosen indices only.
        eps: the perturbation budget (> 0); robust means input margin > eps.
        n: attack budget (points attacked; capped at the population size).
        method: ``"isotonic"`` (default), ``"threshold"`` (the paper's) or ``"stratified"``; see module docstring
            (the isotonic CI is approximate and under-covers; ``"stratified"`` when coverage matters).
        selection: ``"random"`` or ``"adaptive"`` (isotonic / stratified only).
        seed: seed of the sampling and bootstrap.
        ci: confidence level of the interval.
        n_boot: bootstrap replicates (isotonic, threshold); 0 = no bootstrap.
        alpha: fixed target recall for the threshold method (None = the paper's search).
        n_strata: logit-margin strata (isotonic, stratified; at most ``n``, so that every stratum is attacked;
            default ``clip(n // 20, 1, 20)`` for random isotonic, ``clip(n // 10, 2, 20)`` otherwise, and never
            more than ``n``).

    Returns a `SubsetEstimate` (with ``truth`` / ``error`` when full margins were given).
    """
    lm = as_margin_array(logit_margin, "logit_margin", allow_inf=False, nonnegative=False)
    N = len(lm)
    corr = np.ones(N, bool) if correct is None else as_bool_array(correct, "correct", N)
    eps = check_positive(eps)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n must be an integer >= 1, got {n!r}", "pass the number of points to attack, e.g. n=500")
    if method not in ESTIMATION_METHODS:
        raise InputError(f"unknown method {method!r}", f"use one of {', '.join(ESTIMATION_METHODS)}")
    if selection not in ("random", "adaptive"):
        raise InputError(f"unknown selection {selection!r}", "use 'random' or 'adaptive'")
    if method == "threshold" and selection != "random":
        raise InputError("the threshold method samples uniformly (selection='random')",
                         "use method='isotonic' or 'stratified' for adaptive selection")
    ci = check_unit_interval(ci, "ci")
    if ci >= 1:
        raise InputError("ci must be < 1", "pass e.g. ci=0.95")
    if alpha is not None:
        alpha = check_unit_interval(alpha, "alpha")
    check_nonnegative_int(n_boot, "n_boot", "pass e.g. n_boot=200")
    if n_strata is not None and (isinstance(n_strata, (bool, np.bool_)) or not isinstance(n_strata, (int, np.integer))
                                 or n_strata < 1):
        raise InputError(f"n_strata must be an integer >= 1, got {n_strata!r}", "pass e.g. n_strata=10")
    if n_strata is not None and method != "threshold" and n_strata > n:
        # strata without an attacked point would be guessed, not estimated (and always the same ones)
        raise InputError(f"n_strata must be <= n (every stratum needs an attacked point), got n_strata={n_strata} "
                         f"with n={n}", f"pass n_strata <= {n}, or leave it out (the default fits the budget)")
    if method == "isotonic" and n < SMALL_ISOTONIC_N:
        warnings.warn(f"with n={n} attacked points the isotonic interval is much too narrow (at n = 1 it held the "
                      "truth in 0 of 40 trials, at n = 2 in 55%); use method='stratified' for an interval at this "
                      "budget, or attack more points", RuntimeWarning, stacklevel=2)
    full: np.ndarray | None = None
    if callable(input_margins):
        source: Any = input_margins
    else:
        full = as_margin_array(input_margins, "input_margins", n=N)
        source = full
    rng = np.random.default_rng(seed)
    truth = float(np.mean(corr & (full > eps))) if full is not None else None

    if method == "threshold":
        est, lo, hi, idx, lam = _threshold_method(lm, corr, source, eps, int(n), rng, alpha, int(n_boot), ci)
    else:
        pop = np.flatnonzero(corr)
        lam = None
        if len(pop) == 0:  # nothing correct: robust accuracy is 0, no attack needed
            est = lo = hi = 0.0
            idx = np.array([], int)
        else:
            n_eff = min(int(n), len(pop))
            if n_strata is None:
                h = (np.clip(n_eff // 20, 1, 20) if (method == "isotonic" and selection == "random")
                     else min(np.clip(n_eff // 10, 2, 20), n_eff))
            else:
                h = n_strata
            h = int(min(h, len(pop)))
            lm_pop = lm[pop]
            strata, att, rob = _draw(lm_pop, lambda pos: _get_margins(source, pop[pos]), n_eff, eps, rng,
                                     selection, h)
            if method == "stratified":
                est, lo, hi = _stratified_estimate(strata, att, rob, N, ci)
            else:
                est, lo, hi = _isotonic_estimate(lm_pop, strata, att, rob, N, ci, int(n_boot), rng)
            idx = np.sort(pop[np.concatenate(att)])
            # The truth lies between "no unattacked point robust" and "all of them robust".
            known = float(sum(int(r.sum()) for r in rob))
            floor_, ceil_ = known / N, (known + len(pop) - len(idx)) / N
            est, lo, hi = (float(np.clip(v, floor_, ceil_)) for v in (est, lo, hi))
    return SubsetEstimate(float(est), float(lo), float(hi), int(len(idx)), method, selection, eps, N, idx,
                          None if lam is None else float(lam), truth,
                          None if truth is None else float(est) - truth)


def subset_error_curve(logit_margin: Any, correct: Any, input_margin: Any, eps: float, ns: Sequence[int], *,
                       repeats: int = 20, methods: Sequence[str] = ESTIMATION_METHODS, selection: Selection = "random",
                       seed: int = 0, ci: float = 0.95, n_boot: int = 100) -> pd.DataFrame:
    """Simulate the subset estimators on full margins: one row per (method, n, repeat).

    Columns: ``method, selection, n, repeat, estimate, ci_low, ci_high, truth, error, abs_error, covered``.
    Summarise with `summarize_error_curve` (mean absolute error, RMSE and CI coverage per method and n).
    The threshold method always samples at random; ``selection`` applies to the others.
    """
    if callable(input_margin):
        raise InputError("subset_error_curve needs the full input margins, not a callback",
                         "pass the input margin of every point (a simulation)")
    if not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise InputError(f"repeats must be an integer >= 1, got {repeats!r}", "pass e.g. repeats=20")
    ns = [int(v) for v in np.atleast_1d(np.asarray(ns)).reshape(-1)]
    if not ns:
        raise InputError("ns is empty", "pass budgets, e.g. ns=[100, 200, 500]")
    rows = []
    for mi, meth in enumerate(methods):
        for n in ns:
            for rep in range(repeats):
                res = estimate_robust_accuracy(
                    logit_margin, correct, input_margin, eps, n, method=meth,  # type: ignore[arg-type]
                    selection="random" if meth == "threshold" else selection,
                    seed=seed + 100_003 * rep + 7919 * mi + 31 * n, ci=ci, n_boot=n_boot)
                rows.append({"method": meth, "selection": res.selection, "n": n, "repeat": rep,
                             "estimate": res.estimate, "ci_low": res.ci_low, "ci_high": res.ci_high,
                             "truth": res.truth, "error": res.error, "abs_error": abs(res.error),
                             "covered": res.covered})
    return pd.DataFrame(rows)


def summarize_error_curve(curve: pd.DataFrame) -> pd.DataFrame:
    """Per (method, n): mean absolute error, RMSE, mean CI width and CI coverage of a `subset_error_curve`."""
    g = curve.assign(sq=curve["error"] ** 2, width=curve["ci_high"] - curve["ci_low"]).groupby(
        ["method", "n"], sort=True)
    return pd.DataFrame({"mae": g["abs_error"].mean(), "rmse": np.sqrt(g["sq"].mean()),
                         "ci_width": g["width"].mean(), "coverage": g["covered"].mean(),
                         "repeats": g.size()}).reset_index()
