"""Robust accuracy from a few attacks: the paper's threshold rule, isotonic and stratified estimators."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import det_curve

from brittle.errors import InputError
from brittle.analysis.subset import (PAPER_ALPHAS, estimate_robust_accuracy, fit_isotonic, paper_threshold,
                            predict_isotonic, subset_error_curve, summarize_error_curve)


def _population(n=3000, seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    d = rng.gamma(2.0, 0.1, n)
    lm = np.exp(np.log(d * 10) + rng.normal(0, noise, n))  # consistent up to noise
    correct = rng.random(n) < 0.85
    return lm, correct, d


# --- the paper's threshold rule, against a port of the authors' det_curve-based code ------------

def _ref_fpr_at_tpr(y_true, scores, target_tpr):
    fpr, fnr, thresholds = det_curve(y_true, scores)
    tpr = 1 - fnr
    index = np.argmin(tpr[tpr >= target_tpr])
    return fpr[index], tpr[index], thresholds[index]


def _ref_lambda(lm, nonrobust, correct, alpha=None):
    """determine_lda of the reference notebook; returns λ in logit-margin units (vulnerable ⇔ lm <= λ)."""
    rob_subset = np.mean(correct & ~nonrobust)
    if alpha is not None:
        return -_ref_fpr_at_tpr(nonrobust, -lm, alpha)[-1]
    best, best_gap = np.inf, np.inf
    for a in PAPER_ALPHAS:
        thr = _ref_fpr_at_tpr(nonrobust, -lm, a)[-1]
        gap = abs(rob_subset - np.mean(correct & ~(-lm >= thr)))
        if gap < best_gap:
            best, best_gap = thr, gap
    return -best


@pytest.mark.parametrize("seed", range(8))
def test_paper_threshold_matches_reference(seed):
    lm, correct, d = _population(40 + 40 * seed, seed=seed, noise=0.3 + 0.2 * seed)
    lm = np.round(lm, seed % 3)  # many ties when rounded to integers
    nonrob = d <= 0.2
    assert paper_threshold(lm, nonrob, correct) == pytest.approx(_ref_lambda(lm, nonrob, correct))
    assert paper_threshold(lm, nonrob, correct, 0.9) == pytest.approx(_ref_lambda(lm, nonrob, correct, 0.9))


def test_paper_threshold_without_nonrobust_points_flags_nothing():
    assert paper_threshold(np.array([1.0, 2.0]), np.array([False, False]), None) == -math.inf


def test_threshold_method_predicts_the_unattacked_points_with_lambda_and_counts_the_attacked_ones():
    lm, correct, d = _population()
    res = estimate_robust_accuracy(lm, correct, d, 0.2, 300, method="threshold", seed=1)
    attacked = np.zeros(len(lm), bool)
    attacked[res.indices] = True
    assert res.threshold == paper_threshold(lm[attacked], d[attacked] <= 0.2, correct[attacked])
    measured = np.sum(attacked & correct & (d > 0.2))
    predicted = np.sum(~attacked & correct & (lm > res.threshold))
    assert res.estimate == pytest.approx((measured + predicted) / len(lm))
    assert res.n_attacked == 300 and res.ci_low <= res.estimate <= res.ci_high


@pytest.mark.parametrize("eps", [0.2, 100.0])
def test_threshold_method_attacking_every_point_is_exact(eps):
    lm, correct, d = _population(400)
    res = estimate_robust_accuracy(lm, correct, d, eps, 10_000, method="threshold", n_boot=50)
    assert res.n_attacked == 400 and res.truth == np.mean(correct & (d > eps))
    assert res.estimate == res.ci_low == res.ci_high == pytest.approx(res.truth)


# --- isotonic fit ------------------------------------------------------------------------------

def test_fit_isotonic_matches_sklearn():
    rng = np.random.default_rng(0)
    x = np.round(rng.random(200), 2)  # ties
    y = (rng.random(200) < x).astype(float)
    w = rng.random(200) + 0.5
    knots, fitted = fit_isotonic(x, y, w)
    ref = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(x, y, sample_weight=w)
    grid = np.linspace(-0.2, 1.2, 301)
    assert np.allclose(predict_isotonic(knots, fitted, grid), ref.predict(grid))


# --- estimators with known truth --------------------------------------------------------------

@pytest.mark.parametrize("method, selection", [("isotonic", "random"), ("stratified", "random"),
                                               ("isotonic", "adaptive")])
def test_ci_covers_truth_in_most_repeats(method, selection):
    lm, correct, d = _population()
    covered = [estimate_robust_accuracy(lm, correct, d, 0.2, 200, method=method, selection=selection, seed=s,
                                        n_boot=50).covered for s in range(50)]
    assert np.mean(covered) >= 0.85


def test_error_falls_with_n():
    lm, correct, d = _population()
    curve = subset_error_curve(lm, correct, d, 0.2, [50, 800], repeats=15, methods=("isotonic", "threshold"),
                               n_boot=20)
    summary = summarize_error_curve(curve).set_index(["method", "n"])
    for method in ("isotonic", "threshold"):
        assert summary.loc[(method, 800), "mae"] < summary.loc[(method, 50), "mae"]
    assert summary.loc[("isotonic", 800), "ci_width"] < summary.loc[("isotonic", 50), "ci_width"]
    assert set(curve.columns) >= {"estimate", "ci_low", "ci_high", "truth", "error", "covered"}


def test_callback_gets_only_chosen_correct_indices_and_matches_full_margins():
    lm, correct, d = _population(1000)
    calls = []

    def attack_fn(idx):
        calls.append(idx)
        return d[idx]

    for selection, n_calls in (("random", 1), ("adaptive", 2)):
        calls.clear()
        res_cb = estimate_robust_accuracy(lm, correct, attack_fn, 0.2, 120, selection=selection, seed=4)
        res_full = estimate_robust_accuracy(lm, correct, d, 0.2, 120, selection=selection, seed=4)
        assert len(calls) == n_calls
        attacked = np.concatenate(calls)
        assert len(attacked) == len(np.unique(attacked)) == 120 == res_cb.n_attacked
        assert correct[attacked].all()
        assert res_cb.estimate == res_full.estimate and res_cb.truth is None and res_full.truth is not None


def test_attacking_every_correct_point_is_exact():
    lm, correct, d = _population(400)
    for method in ("isotonic", "stratified"):
        res = estimate_robust_accuracy(lm, correct, d, 0.2, 10_000, method=method)
        assert res.n_attacked == correct.sum()
        assert res.estimate == pytest.approx(res.truth) and res.ci_low == pytest.approx(res.ci_high)


def test_without_correctness_estimates_fraction_robust():
    lm, _, d = _population(1000)
    res = estimate_robust_accuracy(lm, None, d, 0.2, 200, seed=2)
    assert res.truth == pytest.approx(np.mean(d > 0.2))
    assert abs(res.error) < 0.1


def test_n_strata_above_the_budget_is_refused_and_the_default_fits_the_budget():
    lm, correct, d = _population(2000)
    for method in ("stratified", "isotonic"):
        with pytest.raises(InputError, match=r"n_strata must be <= n .*n_strata=100 with n=50"):
            estimate_robust_accuracy(lm, correct, d, 0.2, 50, method=method, n_strata=100)
        assert estimate_robust_accuracy(lm, correct, d, 0.2, 50, method=method, n_strata=50).n_attacked == 50
    # one attacked point: the default strata (2 for stratified) never leave the upper half unattacked for ever
    upper = lm > np.median(lm[correct])
    for method, selection in (("stratified", "random"), ("stratified", "adaptive"), ("isotonic", "adaptive")):
        hits = [bool(upper[estimate_robust_accuracy(lm, correct, d, 0.2, 1, method=method, selection=selection,
                                                    seed=s, n_boot=10).indices[0]]) for s in range(30)]
        assert 5 <= sum(hits) <= 25


def test_stratified_coverage_with_as_many_strata_as_attacked_points():
    rng = np.random.default_rng(0)
    d = rng.exponential(0.2, 2000)
    lm, correct = d + rng.normal(0, 0.1, 2000), rng.random(2000) < 0.9
    covered = [estimate_robust_accuracy(lm, correct, d, 0.1, 50, method="stratified", n_strata=50, seed=s).covered
               for s in range(60)]
    assert np.mean(covered) >= 0.85


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=0.0), "eps"), (dict(eps=-1.0), "eps"), (dict(n=0), "n must"), (dict(n=True), "n must"),
    (dict(n_strata=6, method="stratified"), "n_strata must be <= n"), (dict(method="magic"), "method"),
    (dict(selection="adaptive", method="threshold"), "threshold"), (dict(ci=1.0), "ci"),
    (dict(input_margins=lambda idx: np.ones(len(idx) + 1)), "attack_fn"),
    (dict(input_margins=np.ones(5)), "samples"), (dict(logit_margin=[np.nan] * 10), "NaN"),
])
def test_bad_input(kwargs, match):
    args = dict(logit_margin=np.arange(10.0), correct=np.ones(10, bool), input_margins=np.arange(10.0) / 10,
                eps=0.3, n=5)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        estimate_robust_accuracy(args.pop("logit_margin"), args.pop("correct"), args.pop("input_margins"),
                                 args.pop("eps"), args.pop("n"), **args)


def test_a_tiny_isotonic_budget_warns_that_its_interval_is_too_narrow():
    """At n = 1 the isotonic 95% interval (about ±0.06) held the truth in 0 of 40 trials."""
    import warnings

    lm, correct, d = _population(2000)
    with pytest.warns(RuntimeWarning, match=r"with n=1 attacked points the isotonic interval is much too narrow"):
        estimate_robust_accuracy(lm, correct, d, 0.2, 1, n_boot=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimate_robust_accuracy(lm, correct, d, 0.2, 1, method="stratified")
        estimate_robust_accuracy(lm, correct, d, 0.2, 50, n_boot=10)
