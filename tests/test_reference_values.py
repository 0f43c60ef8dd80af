"""Reference values for computations whose bugs the family tests missed.

A mutation audit (2026-12-01: 68 small plausible bugs, one at a time, against the tests covering each module)
found 23 bugs the suite let through; each test here checks the computation against an outside reference —
a closed form, a brute-force enumeration, scipy / scikit-learn, or the formula its docstring states — and fails
under the bug named in its comment (the audit's mutant id).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from scipy import stats
from sklearn.metrics import average_precision_score, det_curve


# ---------------------------------------------------------------- attacks: verify / is_flipped / project
def test_exact_tie_is_not_a_flip():                                   # kills flip_ge
    from brittle.margins.attacks.base import is_flipped
    assert not bool(is_flipped(torch.tensor([[0.5, 0.5]]), torch.tensor([1]))[0])
    assert bool(is_flipped(torch.tensor([[0.6, 0.5]]), torch.tensor([1]))[0])


def test_verify_clamps_candidates_to_the_domain():                    # kills verify_no_clamp
    from brittle.margins.attacks.base import verify
    lin = nn.Linear(1, 2)
    with torch.no_grad():                                             # class 1 wins only for x > 1.2
        lin.weight.copy_(torch.tensor([[0.0], [1.0]])); lin.bias.copy_(torch.tensor([0.0, -1.2]))
    x = torch.tensor([[0.9]])
    res = verify(lin, x, torch.tensor([[1.5]]), torch.tensor([0]), "linf", (0.0, 1.0))
    assert torch.isinf(res.upper).all()                              # the candidate outside [0,1] is not adversarial
    assert float(res.x_adv.max()) <= 1.0


def test_l2_projection_leaves_points_inside_the_ball_unchanged():     # kills project_l2_no_cap
    from brittle.margins.attacks._fixed import eps_tensor, project
    x = torch.full((2, 5), 0.5)
    d = torch.tensor([[0.01, 0.0, 0.0, 0.0, 0.0], [0.3, 0.4, 0.0, 0.0, 0.0]])    # norms 0.01 and 0.5
    out = project(x, x + d, eps_tensor(0.1, x), "l2", (0.0, 1.0))
    assert torch.allclose(out[0], x[0] + d[0])                        # inside: untouched
    assert torch.allclose(out[1], x[1] + d[1] * 0.1 / 0.5, atol=1e-6)  # outside: radial projection


# ---------------------------------------------------------------- robust accuracy: margin == eps ties
def test_margin_equal_to_eps_is_not_robust():                         # kills share_robust_ge, robust_acc_lower_ge
    from brittle.analysis.consistency import robust_accuracy, share_robust
    from brittle.analysis.robustness import robust_accuracy_from_margins
    m, c = np.array([0.1, 0.2]), np.array([True, True])
    assert share_robust(m, c, np.array([0.1]))[0] == 0.5
    assert robust_accuracy_from_margins(m, c, [0.1])["robust_accuracy"].tolist() == [0.5]
    df = robust_accuracy([0.1], c, attack_margin=[0.1, 0.2], certified_margin=[0.1, 0.2])
    assert df["robust_acc_attack"].tolist() == [0.5] and df["robust_acc_certified"].tolist() == [0.5]


def test_input_margin_equal_to_eps_is_a_positive():                   # kills det_pos_strict
    from brittle.analysis.detection import detection_metrics
    det = detection_metrics([0.1, 0.3, 0.05, 0.5], [1.0, 3.0, 0.5, 4.0], [0.1])[0]
    assert det.n_positive == 2 and det.auroc == 1.0


# ---------------------------------------------------------------- OOD metrics
def test_aupr_in_hand_value():                                        # kills aupr_in_sign
    from brittle.analysis.detection import ood_metrics
    r = ood_metrics([0.0, 1.0, 2.0], [1.5, 3.0, 4.0])
    assert r.aupr_in == pytest.approx(11 / 12)    # ID ranked by -score: hits at ranks 1, 2, 4 -> (1 + 1 + 3/4)/3
    assert r.aupr_in == pytest.approx(average_precision_score([1, 1, 1, 0, 0, 0], -np.array([0, 1, 2, 1.5, 3, 4.])))


# ---------------------------------------------------------------- bootstrap CI of Kendall tau
def test_kendall_ci_matches_an_independent_percentile_bootstrap():    # kills ci_swap
    from brittle.analysis.consistency import margin_correlations
    rng = np.random.default_rng(0)
    n, B = 300, 3000
    z = rng.multivariate_normal([0, 0], [[1, .6], [.6, 1]], n)
    d_in, lm = np.exp(z[:, 0]), z[:, 1]
    mc = margin_correlations(d_in, lm, n_boot=B, seed=1)
    r2 = np.random.default_rng(123)
    reps = np.array([stats.kendalltau(d_in[i], lm[i]).statistic for i in r2.integers(0, n, (B, n))])
    lo, hi = np.quantile(reps, [0.025, 0.975])
    se = reps.std()
    assert abs(mc.kendall.ci_low - lo) < 0.15 * se and abs(mc.kendall.ci_high - hi) < 0.15 * se


# ---------------------------------------------------------------- subset estimators
def test_stratified_ci_one_stratum_is_the_textbook_interval():        # kills strat_z
    from brittle.analysis.subset import estimate_robust_accuracy
    rng = np.random.default_rng(0)
    N, n, eps = 2000, 100, 0.2
    d = rng.gamma(2.0, 0.1, N); lm = d + rng.normal(0, .05, N)
    for ci in (0.95, 0.80):
        r = estimate_robust_accuracy(lm, None, d, eps, n, method="stratified", n_strata=1, seed=3, ci=ci)
        k = int(np.sum(d[r.indices] > eps))
        pt = (k + 0.5) / (n + 1)                                      # the documented smoothing
        var = (1 - n / N) * pt * (1 - pt) * (n / (n - 1)) / n
        half = stats.norm.ppf(0.5 + ci / 2) * math.sqrt(var)
        assert r.estimate == pytest.approx(k / n)
        assert r.ci_high - r.estimate == pytest.approx(half, rel=1e-9)


def test_isotonic_ci_half_width_is_of_the_order_of_the_sampling_sd():  # kills iso_ddof
    from brittle.analysis.subset import estimate_robust_accuracy
    rng = np.random.default_rng(1)
    N, n, eps = 3000, 200, 0.2
    d = rng.gamma(2.0, 0.1, N); lm = d * np.exp(rng.normal(0, .5, N))
    res = [estimate_robust_accuracy(lm, None, d, eps, n, seed=s, n_boot=100) for s in range(40)]
    sd = np.std([r.estimate for r in res])
    half = np.mean([(r.ci_high - r.ci_low) / 2 for r in res]) / 1.96
    assert 0.5 < half / sd < 2.0, (half, sd)


def test_threshold_estimate_counts_ties_with_lambda_as_vulnerable():  # kills threshold_pop_ge
    from brittle.analysis.subset import estimate_robust_accuracy
    rng = np.random.default_rng(0)
    N = 3000
    d = rng.gamma(2.0, 0.1, N); lm = np.round(d * 10 + rng.normal(0, .5, N))   # integer logit margins: ties
    correct = rng.random(N) < .85
    res = estimate_robust_accuracy(lm, correct, d, 0.2, 300, method="threshold", seed=1)
    att = np.zeros(N, bool); att[res.indices] = True
    want = (np.sum(att & correct & (d > 0.2)) + np.sum(~att & correct & (lm > res.threshold))) / N
    assert res.estimate == pytest.approx(want)


def _ref_lambda(lm, nonrobust, alpha):                                 # the reference notebook's rule
    fpr, fnr, thr = det_curve(nonrobust, -lm)
    tpr = 1 - fnr
    return -thr[np.argmin(tpr[tpr >= alpha])]


def test_paper_threshold_on_a_separable_subset():                      # kills paper_thr_first
    from brittle.analysis.subset import paper_threshold
    lm = np.arange(20.0)
    nonrob = lm < 10                                                   # every vulnerable point below every robust one
    for a in (0.5, 0.8, 0.9):
        assert paper_threshold(lm, nonrob, None, a) == pytest.approx(_ref_lambda(lm, nonrob, a))


# ---------------------------------------------------------------- bounds: soundness on always-active nets
def _affine_relu_net(d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    l1, l2 = nn.Linear(d, 3), nn.Linear(3, 2)
    with torch.no_grad():
        l1.weight.copy_(torch.randn(3, d, generator=g) * 0.3); l1.bias.fill_(5.0)   # always active on [0,1]^d
        l2.weight.copy_(torch.randn(2, 3, generator=g)); l2.bias.zero_()
    return nn.Sequential(l1, nn.ReLU(), l2).double().eval()


@pytest.mark.parametrize("method", ["ibp", "crown", "crown-ibp"])
def test_certified_l2_bound_never_exceeds_the_exact_l2_margin(method):   # kills l2_dual_sign, ibp_l2_spread
    from brittle.margins.bounds.certify import certified_lower_bounds
    net = _affine_relu_net()
    l1, l2 = net[0], net[2]
    g = (l2.weight[0] - l2.weight[1]) @ l1.weight                     # logit gap = g.x + c (the ReLUs are identities)
    x = torch.full((1, 4), 0.5, dtype=torch.float64)
    with torch.no_grad():                                             # put x at L2 distance 0.1 from the boundary
        l2.bias[0] -= float(net(x)[0, 0] - net(x)[0, 1]) - 0.1 * float(g.norm())
        gap = float(net(x)[0, 0] - net(x)[0, 1])
    pred = 0 if gap > 0 else 1
    exact = abs(gap) / float(g.norm())                               # distance to the hyperplane
    assert float((x - 0.5).abs().max()) + exact < 0.5                 # the box does not bind: exact is the margin
    lb = float(certified_lower_bounds(net.float(), x.float(), torch.tensor([pred]), "l2", method=method)[0])
    assert lb <= exact * (1 + 1e-5), (lb, exact)
    if method != "ibp":
        assert lb >= 0.95 * exact                                     # and CROWN is (nearly) exact here


def test_crown_relaxation_uses_the_adaptive_lower_slope():            # kills crown_lower_slope
    from brittle.margins.bounds.network import _relaxation
    low, up = torch.tensor([-1.0, -0.5, 0.2, -2.0]).double(), torch.tensor([0.5, 1.0, 0.9, -0.1]).double()
    lower_slope, upper_slope, icpt = _relaxation(low, up)
    assert lower_slope.tolist() == [0.0, 1.0, 1.0, 0.0]              # u > -l -> 1, else 0 (module docstring)
    assert upper_slope.tolist() == pytest.approx([0.5 / 1.5, 1.0 / 1.5, 1.0, 0.0])


def test_exact_margin_with_a_neuron_whose_lower_bound_is_exactly_zero():   # kills milp_active_gt
    from brittle.margins.bounds.exact import exact_margins
    l1, l2 = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        l1.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, -1.0]])); l1.bias.copy_(torch.tensor([0.0, 0.0]))
        l2.weight.copy_(torch.tensor([[0.0, -1.0], [1.0, 0.0]])); l2.bias.copy_(torch.tensor([0.5, 0.0]))
    net = nn.Sequential(l1, nn.ReLU(), l2).eval()
    x = torch.tensor([[0.0, 0.0]])       # h1 = relu(x1) has pre-activation lower bound exactly 0 on the ball
    # logits: z0 = 0.5 - relu(x1 - x2), z1 = relu(x1); by brute force on a fine grid the L∞ margin is 0.25
    t = torch.linspace(0, 1, 401)
    X = torch.cartesian_prod(t, t)
    flips = net(X).argmax(1) != 0
    brute = float(X[flips].abs().amax(1).min())
    res = exact_margins(net, x, time_limit=20)
    assert float(res.margins[0]) == pytest.approx(brute, abs=2.6e-3)


# ---------------------------------------------------------------- BatchNorm EMA statistics (documented formulas)
def test_bn_ema_running_statistics_follow_the_documented_formula():   # kills bn_ema_per_batch, bn_var_no_between
    from brittle.adaptation import BNStats
    torch.manual_seed(0)
    lin, bn = nn.Linear(3, 4), nn.BatchNorm1d(4)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(4)); bn.running_var.copy_(torch.rand(4) + 0.5)
    net = nn.Sequential(lin, bn, nn.Linear(4, 2)).eval()
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    x = torch.randn(5, 3)
    with torch.no_grad():
        h = lin(x)
    a = BNStats(bn_stats="ema", bn_momentum=0.1).fit(net)
    a.step(x)
    m = 1 - (1 - 0.1) ** 5
    bm, bv = h.mean(0), h.var(0, unbiased=False)
    adapted = [mod for mod in a.model_.modules() if isinstance(mod, nn.BatchNorm1d)][0]
    assert torch.allclose(adapted.running_mean, (1 - m) * rm + m * bm, atol=1e-6)
    assert torch.allclose(adapted.running_var, (1 - m) * rv + m * bv + m * (1 - m) * (bm - rm) ** 2, atol=1e-6)


# ---------------------------------------------------------------- monitor calibration
def test_calibrate_tpr_accepts_at_least_the_target_when_n_times_tpr_is_not_an_integer():   # kills mon_tpr_floor
    from brittle.monitoring import Monitor
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(10, 1, 2, 2)
    mon = Monitor.calibrate_tpr(net, x, "logit", target_tpr=0.95)
    assert mon.calibration["accept_rate"] >= 0.95                    # 10 inputs: all 10 must be accepted


# ---------------------------------------------------------------- pseudo-margin regression output is monotone
def test_regression_pseudo_margin_is_monotone_in_the_network_output():   # kills pm_square_sign
    from brittle.scores.pseudo_margin import PseudoMargin
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (200, 1))
    d = X[:, 0] ** 2 + 1e-3
    pm = PseudoMargin("regression", hidden=(), epochs=200, seed=0).fit(X, d)
    grid = np.linspace(-3, 3, 61)[:, None]                            # extrapolates below: predicted root < 0
    p = pm.predict(grid)
    assert np.all(np.diff(p) >= 0) or np.all(np.diff(p) <= 0)


# ---------------------------------------------------------------- pseudo-margin censoring (module docstring)
def _censored_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 2))
    d = 0.05 + 0.4 * X[:, 0] + 0.02 * rng.random(n)
    d[X[:, 0] > 0.7] = np.inf                     # the attack found nothing for the most robust 30%
    return X, d


def test_cap_equals_fitting_on_margins_capped_at_the_largest_finite_one():   # kills pm_censor_always_drop
    from brittle.scores.pseudo_margin import PseudoMargin
    X, d = _censored_data()
    capped = np.minimum(d, d[np.isfinite(d)].max())
    a = PseudoMargin("regression", hidden=(8,), epochs=20, seed=0, censored="cap").fit(X, d)
    b = PseudoMargin("regression", hidden=(8,), epochs=20, seed=0, censored="cap").fit(X, capped)
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-6)
    c = PseudoMargin("regression", hidden=(8,), epochs=20, seed=0, censored="drop").fit(X, d)
    e = PseudoMargin("regression", hidden=(8,), epochs=20, seed=0, censored="drop").fit(X[np.isfinite(d)], d[np.isfinite(d)])
    np.testing.assert_allclose(c.predict(X), e.predict(X), rtol=1e-6)


def test_ranking_loss_ranks_censored_margins_above_finite_ones():             # kills pm_rank_cens_below
    from brittle.scores.pseudo_margin import PseudoMargin
    X, d = _censored_data()
    pm = PseudoMargin("ranking", hidden=(16,), epochs=40, seed=0).fit(X, d)
    p = pm.predict(X)
    cens = np.isinf(d)
    assert np.mean(p[cens][:, None] > p[~cens][None, :]) > 0.9
    assert stats.kendalltau(p, np.where(cens, 10.0, d)).statistic > 0.7
