"""Combination strategies (vote, ECDF, Gaussian copula, center-outward OT) against hand cases and references."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from brittle.errors import BrittleError, InputError
from brittle.ood.combine import (CombinedDetector, combiner_from_dict, ecdf_brute_force, gaussian_cdf_genz,
                                 make_combiner, multidim_metrics, strategy_names)

STRATEGIES = ["vote", "ecdf", "copula", "ot"]


@pytest.fixture
def id_ood():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(600, 3))
    a[:, 1] += 0.7 * a[:, 0]
    b = rng.normal(size=(400, 3)) + np.array([1.5, 1.0, 2.0])
    return a, b


def test_registry():
    assert strategy_names() == sorted(STRATEGIES)


@pytest.mark.parametrize("name", STRATEGIES)
def test_orientation_shapes_threshold_roundtrip(name, id_ood):
    a, b = id_ood
    c = make_combiner(name).fit(a[:300])
    s_id, s_ood = c.score(a[300:]), c.score(b)
    assert s_id.shape == (300,) and s_ood.dtype == np.float64
    y = np.r_[np.zeros(300), np.ones(len(b))]
    assert roc_auc_score(y, np.r_[s_id, s_ood]) > 0.8          # higher = more OOD
    t = c.threshold(0.9)
    assert np.mean(c.score(a[:300]) <= t) >= 0.9                # calibrated on the fit rows
    c2 = combiner_from_dict(json.loads(json.dumps(c.to_dict())))
    np.testing.assert_allclose(c2.score(b), s_ood, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(make_combiner(name).fit(a[:300]).score(b), s_ood)   # deterministic


def test_vote_of_identical_detectors_equals_single(id_ood):
    a, b = id_ood
    x_fit, x_test = a[:300, 0], np.r_[a[300:, 0], b[:, 0]]
    single = make_combiner("vote").fit(x_fit)
    for d in (2, 3, 4):
        vote = make_combiner("vote").fit(np.repeat(x_fit[:, None], d, axis=1))
        v = vote.score(np.repeat(x_test[:, None], d, axis=1))
        np.testing.assert_array_equal(v, single.score(x_test))
        # same ranking as the raw detector and the same accept decisions at the calibrated TPR
        np.testing.assert_array_equal(np.argsort(v, kind="stable"), np.argsort(x_test, kind="stable"))
        for tpr in (0.8, 0.95):
            t_raw = np.sort(x_fit)[int(np.ceil(tpr * len(x_fit))) - 1]
            np.testing.assert_array_equal(v <= vote.threshold(tpr), x_test <= t_raw)
            np.testing.assert_allclose(vote.per_detector_thresholds(tpr), t_raw, rtol=0, atol=1e-12)


def test_vote_quorum_is_order_statistic():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 3))
    v = make_combiner("vote", quorum=1).fit(a)
    z = v.marginals_.transform(a)
    np.testing.assert_allclose(v.score(a), z.max(1))
    v3 = make_combiner("vote", quorum=3).fit(a)
    np.testing.assert_allclose(v3.score(a), z.min(1))


@pytest.mark.parametrize("d", [1, 2, 4])
def test_ecdf_equals_brute_force_count(d):
    rng = np.random.default_rng(d)
    ref = np.round(rng.normal(size=(257, d)), 1)                 # ties on purpose
    q = np.r_[np.round(rng.normal(size=(300, d)), 1), ref[:20]]
    c = make_combiner("ecdf").fit(ref)
    brute = np.array([np.sum(np.all(ref <= row, axis=1)) for row in q]) / len(ref)
    np.testing.assert_array_equal(c.score(q), brute)
    np.testing.assert_array_equal(ecdf_brute_force(ref, q), brute)
    small = make_combiner("ecdf", max_bitset_bytes=0).fit(ref)       # brute-force path
    np.testing.assert_array_equal(small.score(q), brute)


def test_copula_cdf_matches_scipy():
    from scipy.stats import multivariate_normal

    r = np.array([[1, 0.6, 0.2], [0.6, 1, 0.4], [0.2, 0.4, 1]])
    z = np.random.default_rng(0).normal(size=(40, 3))
    ref = multivariate_normal(np.zeros(3), r).cdf(z)
    np.testing.assert_allclose(gaussian_cdf_genz(z, r, n_qmc=1024), ref, atol=2e-3)


def test_copula_d1_is_the_marginal_cdf():
    x = np.random.default_rng(0).normal(size=101)
    c = make_combiner("copula").fit(x)
    ranks = np.argsort(np.argsort(x))
    np.testing.assert_allclose(c.score(x), (ranks + 0.5) / 101, atol=1e-12)


def test_center_outward_rank_is_abs_2F_minus_1_in_1d():
    rng = np.random.default_rng(0)
    half = np.sort(rng.exponential(size=50)) + 0.1
    s = np.r_[-half, half]                                         # a symmetric sample
    F = (np.argsort(np.argsort(s)) + 0.5) / len(s)
    exact = make_combiner("ot", epsilon=1e-9).fit(s)
    np.testing.assert_allclose(exact.score(s), np.abs(2 * F - 1), atol=1e-9)
    np.testing.assert_allclose(exact.fitted_map_[:, 0], 2 * F - 1, atol=1e-12)
    smooth = make_combiner("ot").fit(s)                            # default smoothing: within two grid steps
    assert np.max(np.abs(smooth.score(s) - np.abs(2 * F - 1))) <= 2.0 / len(s)
    # out of sample: between two fitted points the rank lies between theirs; beyond the sample it grows
    mid = (half[10] + half[11]) / 2
    r = smooth.score(np.array([mid, 100.0, 200.0]))
    lo, hi = sorted(smooth.score(np.array([half[10], half[11]])))
    assert lo - 1e-9 <= r[0] <= hi + 1e-9
    assert 1.0 < r[1] < r[2]


def test_center_outward_grid_is_spherical_uniform():
    from brittle.ood.combine import spherical_uniform_grid

    g, n_r = spherical_uniform_grid(400, 2)
    radii = np.linalg.norm(g, axis=1)
    assert radii.max() < 1 and abs(np.mean(radii) - 0.5) < 0.01
    np.testing.assert_allclose(g.mean(0), 0, atol=1e-12)


@pytest.mark.parametrize("name", ["vote", "copula", "ecdf"])
def test_multidim_metrics_reduce_to_scalar_in_1d(name, id_ood):
    from brittle.analysis.detection import ood_metrics

    a, b = id_ood
    c = make_combiner(name).fit(a[:300, 2])
    m = multidim_metrics(c, a[300:, 2], b[:, 2], tpr=0.95)
    ref = ood_metrics(a[300:, 2], b[:, 2], target_tpr=0.95)
    # vote and copula scores are strictly increasing in the one score: exact. The ECDF is a step function
    # of the fit sample: inputs between two consecutive fit values (or beyond them) tie — equal up to that
    tol = 1e-12 if name != "ecdf" else 0.005
    assert m.auroc == pytest.approx(ref.auroc, abs=tol)
    assert m.fpr_at_tpr == pytest.approx(ref.fpr_at_tpr, abs=tol if name != "ecdf" else 0.02)
    assert m.d == 1 and 0 <= m.calibrated_fpr <= 1


def test_multidim_metrics_vs_scalar_auroc_of_score(id_ood):
    a, b = id_ood
    c = make_combiner("ecdf").fit(a[:300])
    m = multidim_metrics(c, a[300:], b)
    y = np.r_[np.zeros(300), np.ones(len(b))]
    assert m.auroc == pytest.approx(roc_auc_score(y, np.r_[c.score(a[300:]), c.score(b)]))


@pytest.mark.parametrize("bad", [np.array([[1.0, np.nan]]), np.zeros((3, 0)), "x", np.zeros((2, 2, 2)), None])
def test_bad_score_matrices(bad):
    with pytest.raises(BrittleError):
        make_combiner("ecdf").fit(bad)


def test_bad_inputs():
    c = make_combiner("vote").fit(np.random.default_rng(0).normal(size=(10, 2)))
    with pytest.raises(InputError, match="fitted on 2"):
        c.score(np.zeros((3, 3)))
    with pytest.raises(InputError, match="tpr"):
        c.threshold(1.5)
    with pytest.raises(InputError, match="not fitted"):
        make_combiner("ot").score(np.zeros((3, 2)))
    with pytest.raises(InputError, match="unknown combination"):
        make_combiner("mean")
    with pytest.raises(InputError, match="quorum"):
        make_combiner("vote", quorum=5).fit(np.zeros((4, 2)))
    with pytest.raises(InputError):
        make_combiner("ot", epsilon=-1)
    with pytest.raises(InputError):
        combiner_from_dict({"combiner": "nope"})
    with pytest.raises(InputError):
        CombinedDetector(detectors=[])


def test_combined_detector_is_a_scorer():
    import torch

    from brittle.models.features import Features
    from brittle.scores.base import scorer_from_dict

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 5)) * 3
    f = Features(logits.astype(np.float32))
    cd = CombinedDetector(["msp", "energy", "max_logit"], strategy="copula").fit(f)
    s = cd.score(f)
    assert s.shape == (400,) and cd.flag_below is False and cd.layers == ()
    t = cd.score_tensor(torch.as_tensor(logits, dtype=torch.float32), {})
    np.testing.assert_allclose(t.numpy(), s, atol=1e-6)
    cd2 = scorer_from_dict(json.loads(json.dumps(cd.to_dict())))
    np.testing.assert_allclose(cd2.score(f), s, atol=1e-12)
    # a margin (flag_below=True) is oriented by risk: the combined ID acceptance still hits the target
    cm = CombinedDetector(["logit_margin", "msp"], strategy="vote").fit(f)
    assert np.mean(cm.score(f) <= cm.threshold(0.9)) >= 0.9


def test_popcount_table_equals_bitwise_count_and_drives_the_ecdf_on_numpy_1(monkeypatch):
    """NumPy < 2.0 has no ``np.bitwise_count``: the ECDF then counts bits with a byte lookup table, which must give
    the same counts (checked against Python's own bit count and, where NumPy has it, np.bitwise_count)."""
    from brittle.ood.combine.ecdf import EmpiricalCDF, popcount_rows

    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**63, size=(64, 5), dtype=np.uint64) | (rng.integers(0, 2, (64, 5), dtype=np.uint64) << 63)
    words[0], words[1] = 0, np.iinfo(np.uint64).max
    ref = np.array([sum(bin(int(v)).count("1") for v in row) for row in words])
    np.testing.assert_array_equal(popcount_rows(words, table=True), ref)
    if hasattr(np, "bitwise_count"):
        np.testing.assert_array_equal(popcount_rows(words, table=True), np.bitwise_count(words).sum(axis=1))
        np.testing.assert_array_equal(popcount_rows(words, table=False), ref)
    a, q = rng.normal(size=(300, 3)), rng.normal(size=(50, 3))
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # as on NumPy 1.x
    c = EmpiricalCDF().fit(a)
    assert c._bits is not None  # the bit-set path, not the brute-force fallback
    np.testing.assert_array_equal(c.score(q), ecdf_brute_force(a, q))


def test_combined_detector_scores_model_detectors_through_the_model():
    """ODIN (eps > 0) and Mahalanobis with noise preprocess their inputs: in a combination, fit_model /
    score_model route them through their own score_model (the same numbers as scoring them alone), the monitor's
    score_batch agrees, and fit / score on features alone are refused with a fix that applies."""
    from brittle.data.loading import load_mnist
    from brittle.models import zoo
    from brittle.models.features import extract_features
    from brittle.ood import MSP, ODIN, Mahalanobis
    from brittle.scores.base import scorer_from_dict

    model, mnist = zoo.load("standard"), load_mnist()
    fit, test = mnist.subset(slice(0, 200)), mnist.subset(slice(5000, 5060))
    c = CombinedDetector(["odin", "msp"], strategy="ecdf").fit_model(model, fit)
    msp = MSP()

    def matrix(d):
        return np.column_stack([ODIN().score_model(model, d), msp.risk(msp.score(extract_features(model, d)))])

    ref = make_combiner("ecdf").fit(matrix(fit))  # no detector needs fitting: the strategy sees every input
    np.testing.assert_array_equal(c.score_model(model, test), ref.score(matrix(test)))
    np.testing.assert_allclose(c.score_batch(model, test.x).numpy(), c.score_model(model, test), atol=1e-12)
    feats = extract_features(model, test, ["6"])
    for call in (lambda: c.score(feats), lambda: CombinedDetector(["odin", "msp"]).fit(feats)):
        with pytest.raises(InputError, match=r"scores through the model .* Fix: use fit_model\(model, data\) and "
                                             r"score_model\(model, data\)"):
            call()
    # a member that needs fitting and the model: fitted on the detector part, scored through the model
    cm = CombinedDetector([Mahalanobis(noise=0.01), "knn"], strategy="vote").fit_model(model, fit)
    s = cm.score_model(model, test)
    assert s.shape == (60,) and np.isfinite(s).all()
    np.testing.assert_allclose(cm.score_batch(model, test.x).numpy(), s, atol=1e-9)
    np.testing.assert_array_equal(scorer_from_dict(json.loads(json.dumps(cm.to_dict()))).score_model(model, test), s)
