"""Margin consistency metrics: agreement with scipy / scikit-learn, hand-computed cases, censoring, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from brittle.analysis.consistency import detection_metrics, fpr_at_tpr, margin_correlations, robust_accuracy
from brittle.errors import InputError


def _noisy(n=300, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.gamma(2.0, 0.1, n)
    lm = np.abs(d * 5 + rng.normal(0, 0.3, n))
    return d, lm


def test_point_estimates_equal_scipy():
    d, lm = _noisy()
    res = margin_correlations(d, lm, n_boot=50)
    assert res.kendall.value == pytest.approx(stats.kendalltau(d, lm).statistic, abs=1e-12)
    assert res.spearman.value == pytest.approx(stats.spearmanr(d, lm).statistic, abs=1e-12)
    assert res.pearson.value == pytest.approx(stats.pearsonr(d, lm).statistic, abs=1e-12)
    assert res.tau == res.kendall.value
    for c in (res.kendall, res.spearman, res.pearson):
        assert c.ci_low <= c.value <= c.ci_high
        assert c.ci_high - c.ci_low < 0.3
    assert list(res.to_frame()["metric"]) == ["kendall_tau_b", "spearman_rho", "pearson_r"]


def test_bootstrap_is_seeded_and_subsampled_kendall_is_close():
    d, lm = _noisy(2000, seed=3)
    a = margin_correlations(d, lm, n_boot=200, seed=1)
    b = margin_correlations(d, lm, n_boot=200, seed=1)
    assert (a.kendall.ci_low, a.kendall.ci_high) == (b.kendall.ci_low, b.kendall.ci_high)
    sub = margin_correlations(d, lm, n_boot=200, seed=1, kendall_boot_size=500)
    width_full = a.kendall.ci_high - a.kendall.ci_low
    width_sub = sub.kendall.ci_high - sub.kendall.ci_low
    assert width_sub == pytest.approx(width_full, rel=0.35)
    assert any("m-out-of-n" in note for note in sub.notes)


def test_perfectly_consistent_margins_give_tau_one_and_auroc_one():
    d = np.linspace(0.01, 1.0, 200)
    lm = 3 * d ** 2 + 1  # strictly increasing function of the input margin
    res = margin_correlations(d, lm, n_boot=20)
    assert res.kendall.value == pytest.approx(1.0)
    assert res.spearman.value == pytest.approx(1.0)
    det = detection_metrics(d, lm, np.linspace(0.05, 0.95, 10))
    assert np.allclose(det.auroc, 1.0) and np.allclose(det.aupr, 1.0)
    assert np.allclose(det.fpr_at_95tpr, 0.0)


def test_hand_computed_inconsistent_case():
    d = np.array([1.0, 2.0, 3.0, 4.0])
    lm = np.array([1.0, 3.0, 2.0, 4.0])  # 5 concordant pairs, 1 discordant (2,3)
    assert margin_correlations(d, lm, n_boot=0).kendall.value == pytest.approx(4 / 6)
    det = detection_metrics(d, lm, 2.5)[0]  # positives: lm {1, 3}; negatives: lm {2, 4}
    assert det.n_positive == 2
    assert det.auroc == pytest.approx(3 / 4)  # pairs with pos lm < neg lm: (1,2) (1,4) (3,4)
    # flagging lm <= 3 catches both positives (TPR 1 >= 95%) and one negative (lm 2)
    assert det.fpr_at_95tpr == pytest.approx(0.5) and det.threshold_at_95tpr == pytest.approx(3.0)


def test_censored_margins_rank_last_and_tie():
    d = np.array([1.0, 2.0, np.inf, np.inf])
    assert margin_correlations(d, [1.0, 2.0, 3.0, 3.0], n_boot=0).kendall.value == pytest.approx(1.0)
    # x tie (inf, inf) vs y untied: 5 concordant, 0 discordant, tau-b = 5 / sqrt(5 * 6)
    res = margin_correlations(d, [1.0, 2.0, 4.0, 3.0], n_boot=0)
    assert res.kendall.value == pytest.approx(5 / math.sqrt(30))
    assert res.n_censored == 2 and res.pearson.n == 2
    # censored samples are never positive
    assert detection_metrics(d, [1, 2, 3, 4], 1e9)[0].n_positive == 2


def test_bootstrap_interval_always_contains_its_point_estimate():
    # one finite input margin among nine censored ones: resamples without it give no coefficient
    d, lm = np.array([0.5] + [np.inf] * 9), np.arange(10.0)
    res = margin_correlations(d, lm, n_boot=1000, seed=0)
    assert res.kendall.value == pytest.approx(stats.kendalltau(np.r_[0.5, [2.0] * 9], lm).statistic)
    for c in (res.kendall, res.spearman):
        assert c.ci_low <= c.value <= c.ci_high
    assert res.kendall.ci_low == res.kendall.value and res.kendall.ci_high > res.kendall.value
    assert any("widened" in note and "Kendall" in note and "Spearman" in note for note in res.notes)
    usual = margin_correlations(*_noisy(100, seed=3), n_boot=200, seed=0)  # no note where nothing was widened
    assert not any("widened" in note for note in usual.notes)


def test_pearson_uses_finite_pairs_only():
    d, lm = _noisy(200, seed=5)
    d2 = d.copy()
    d2[:20] = np.inf
    res = margin_correlations(d2, lm, n_boot=0)
    assert res.pearson.n == 180
    assert res.pearson.value == pytest.approx(stats.pearsonr(d[20:], lm[20:]).statistic)
    big = np.where(np.isinf(d2), 1e6, d2)
    assert res.kendall.value == pytest.approx(stats.kendalltau(big, lm).statistic)


def test_detection_agrees_with_sklearn():
    d, lm = _noisy(500, seed=2)
    for eps in (0.1, 0.2, 0.3):
        det = detection_metrics(d, lm, eps)[0]
        pos = d <= eps
        assert det.auroc == pytest.approx(roc_auc_score(pos, -lm))
        assert det.aupr == pytest.approx(average_precision_score(pos, -lm))
        assert len(det.roc_fpr) == len(det.roc_tpr) == len(det.roc_thresholds)
        assert len(det.pr_precision) == len(det.pr_recall) == len(det.pr_thresholds) + 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fpr_at_tpr_is_the_lowest_fpr_reaching_the_target(seed):
    d, lm = _noisy(300, seed=seed)
    lm = np.round(lm, 1)  # ties
    pos = d <= 0.2
    best = (np.inf, None)
    for t in np.unique(lm):  # brute force over operating points "flag lm <= t"
        flag = lm <= t
        if flag[pos].mean() >= 0.95:
            best = min(best, (flag[~pos].mean(), t), key=lambda b: b[0])
    fpr, tpr, thr = fpr_at_tpr(pos, lm)
    assert fpr == pytest.approx(best[0]) and tpr >= 0.95
    assert ((lm <= thr)[~pos]).mean() == pytest.approx(fpr)


def test_degenerate_eps_gives_nan_with_reason():
    d = np.array([0.5, 0.6, 0.7])
    det = detection_metrics(d, [1.0, 2.0, 3.0], [0.1, 1.0, 0.55])
    assert math.isnan(det[0].auroc) and "no non-robust" in det[0].reason
    assert math.isnan(det[1].auroc) and "every sample" in det[1].reason
    assert det[2].auroc == pytest.approx(1.0) and det[2].reason is None
    assert list(det.to_frame()["eps"]) == [0.1, 1.0, 0.55]


def test_constant_margins_give_nan_not_crash():
    res = margin_correlations(np.ones(10), np.arange(10.0), n_boot=10)
    assert math.isnan(res.kendall.value) and res.notes


def test_samples_correct_restricts():
    d, lm = _noisy(100)
    correct = np.arange(100) % 2 == 0
    sub = margin_correlations(d, lm, n_boot=0, correct=correct, samples="correct")
    assert sub.n == 50
    assert sub.kendall.value == pytest.approx(stats.kendalltau(d[correct], lm[correct]).statistic)
    assert detection_metrics(d, lm, 0.2, correct=correct, samples="correct")[0].n == 50
    with pytest.raises(InputError, match="correct"):
        margin_correlations(d, lm, samples="correct")


def test_robust_accuracy_bracket():
    correct = np.array([True, True, True, False])
    upper = np.array([0.3, 0.1, np.inf, 0.5])   # attack upper bounds
    lower = np.array([0.25, 0.05, 0.15, 0.0])   # certified lower bounds
    df = robust_accuracy([0.2], correct, upper, lower)
    assert df["robust_acc_attack"][0] == pytest.approx(2 / 4)     # samples 0, 2 survive the attack
    assert df["robust_acc_certified"][0] == pytest.approx(1 / 4)  # only sample 0 is certified
    assert df["robust_acc_certified"][0] <= df["robust_acc_attack"][0]
    assert df["clean_accuracy"][0] == pytest.approx(0.75)
    only_attack = robust_accuracy([0.2, 0.4], correct, upper)
    assert np.isnan(only_attack["robust_acc_certified"]).all()
    with pytest.raises(InputError, match="exceeds"):
        robust_accuracy(0.2, correct, upper, upper + 0.1)


@pytest.mark.parametrize("call, match", [
    (lambda: margin_correlations([1, 2, 3], [1, 2]), "3 samples"),
    (lambda: margin_correlations([1, np.nan, 3], [1, 2, 3]), "NaN"),
    (lambda: margin_correlations([1, -2, 3], [1, 2, 3]), "negative"),
    (lambda: margin_correlations([1, 2, 3], [1, np.inf, 3]), "infinite"),
    (lambda: detection_metrics([1, 2, 3], [1, 2, 3], 0), "eps"),
    (lambda: detection_metrics([1, 2, 3], [1, 2, 3], -0.1), "eps"),
    (lambda: detection_metrics([1, 2, 3], [1, 2, 3], np.inf), "eps"),
    (lambda: margin_correlations([1, 2, 3], [1, 2, 3], ci=1.5), "ci"),
    (lambda: robust_accuracy(0.1, [True, False], [1, 2, 3]), "correct"),
])
def test_bad_input_raises_input_error(call, match):
    with pytest.raises(InputError, match=match) as info:
        call()
    assert "Fix:" in str(info.value)
