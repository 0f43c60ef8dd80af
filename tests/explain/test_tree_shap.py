"""Interventional TreeSHAP and Shapley–Taylor values against a brute-force 2^d enumeration of the same game,
computed through each model's own prediction (scikit-learn's predict / decision_function / predict_proba, and
XGBoost's and LightGBM's own leaf assignment), on random trees and ensembles with d ≤ 10, with inputs exactly
on and one float32 / float64 ulp beside split thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
                              GradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from brittle.explain import TreeExplainer
from brittle.explain.brute_force import brute_force_interactions, brute_force_values

TOL = 1e-9


def make_data(seed: int, d: int, n: int = 160):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[:, 0] = np.round(X[:, 0], 1)  # ties: many rows exactly on a threshold's neighbours
    y = X[:, 0] * X[:, 1] + np.sin(2 * X[:, 2 % d]) + (X[:, 3 % d] > 0) + 0.1 * rng.normal(size=n)
    return X, y


def edge_rows(ens, X, rng, n_rows: int = 6) -> np.ndarray:
    """Rows whose features sit exactly on, or one ulp (float32 and float64) beside, split thresholds."""
    rows = X[rng.choice(len(X), n_rows)].copy()
    internal = np.flatnonzero(ens.feature >= 0)
    for r in range(n_rows):
        for j in range(X.shape[1]):
            cand = internal[ens.feature[internal] == j]
            if len(cand) == 0 or rng.random() < 0.2:
                continue
            t = ens.threshold[rng.choice(cand)]
            t32 = np.float32(t)
            rows[r, j] = [t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf),
                          float(t32), float(np.nextafter(t32, np.float32(np.inf))),
                          float(np.nextafter(t32, np.float32(-np.inf)))][rng.integers(6)]
    return rows


def own_output(model):
    if isinstance(model, (GradientBoostingClassifier,)):
        if len(model.classes_) == 2:
            return model.decision_function
        return lambda Z: model.decision_function(Z)[:, 0]
    if hasattr(model, "predict_proba"):
        return lambda Z: model.predict_proba(Z)[:, 1]
    return model.predict


SKLEARN_MODELS = [
    ("dt-reg", lambda s: DecisionTreeRegressor(max_depth=6, random_state=s), False),
    ("dt-clf", lambda s: DecisionTreeClassifier(max_depth=5, random_state=s), True),
    ("rf-reg", lambda s: RandomForestRegressor(n_estimators=8, max_depth=5, random_state=s), False),
    ("rf-clf", lambda s: RandomForestClassifier(n_estimators=6, max_depth=5, random_state=s), True),
    ("et-reg", lambda s: ExtraTreesRegressor(n_estimators=6, max_depth=5, random_state=s), False),
    ("et-clf", lambda s: ExtraTreesClassifier(n_estimators=6, max_depth=4, random_state=s), True),
    ("gb-reg", lambda s: GradientBoostingRegressor(n_estimators=12, max_depth=3, random_state=s), False),
    ("gb-clf", lambda s: GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=s), True),
]


@pytest.mark.parametrize("name,factory,clf", SKLEARN_MODELS, ids=[m[0] for m in SKLEARN_MODELS])
@pytest.mark.parametrize("d", [3, 7])
def test_sklearn_values_and_interactions_match_brute_force(name, factory, clf, d):
    seed = d * 7 + len(name)
    X, y = make_data(seed, d)
    model = factory(seed).fit(X, (y > np.median(y)).astype(int) if clf else y)
    rng = np.random.default_rng(seed)
    bg = X[rng.choice(len(X), 7, replace=False)]
    ex = TreeExplainer().fit(model, bg)
    rows = np.vstack([edge_rows(ex.ensemble_, X, rng, 4), bg[:1]])
    e = ex.explain_interactions(rows)
    f = own_output(model)
    np.testing.assert_allclose(e.values, brute_force_values(f, rows, bg), rtol=0, atol=TOL)
    np.testing.assert_allclose(e.interactions, brute_force_interactions(f, rows, bg), rtol=0, atol=TOL)
    np.testing.assert_allclose(e.prediction, f(rows), rtol=0, atol=TOL)
    assert e.efficiency_error() < 1e-12 * (1 + np.abs(e.prediction).max())
    np.testing.assert_allclose(e.interactions.sum(axis=(1, 2)), e.prediction - e.base_value, atol=1e-12)
    np.testing.assert_allclose(ex.base_value_, f(bg).mean(), atol=TOL)


def test_ten_features_random_forest_with_ties_on_thresholds():
    X, y = make_data(3, 10, 200)
    model = RandomForestRegressor(n_estimators=4, max_depth=7, random_state=0).fit(X, y)
    rng = np.random.default_rng(1)
    bg = X[:5]
    ex = TreeExplainer().fit(model, bg)
    rows = edge_rows(ex.ensemble_, X, rng, 3)
    e = ex.explain_interactions(rows)
    np.testing.assert_allclose(e.values, brute_force_values(model.predict, rows, bg), atol=TOL, rtol=0)
    np.testing.assert_allclose(e.interactions, brute_force_interactions(model.predict, rows, bg), atol=TOL, rtol=0)


def test_threshold_is_compared_in_float32_like_sklearn():
    """A float64 value just above a threshold that rounds to it in float32 goes left, as in sklearn."""
    X = np.array([[0.0], [1.0]] * 5)
    y = X[:, 0]
    model = DecisionTreeRegressor().fit(X, y)
    t = model.tree_.threshold[0]
    x = np.nextafter(np.float64(np.float32(0.5)), 1.0)  # > 0.5 in float64, == 0.5 in float32
    assert t == 0.5 and x > t and model.predict([[x]])[0] == 0.0
    ex = TreeExplainer().fit(model, [[1.0]])
    e = ex.explain([[x]])
    assert e.values[0, 0] == pytest.approx(-1.0, abs=1e-15)


def test_features_never_split_on_get_exactly_zero():
    X, y = make_data(5, 6)
    X[:, 4] = 0.0  # constant: never split on
    model = GradientBoostingRegressor(n_estimators=20, max_depth=2, random_state=0).fit(X[:, :5], y)
    ex = TreeExplainer().fit(model, X[:10, :5])
    e = ex.explain_interactions(X[10:20, :5])
    unused = sorted(set(range(5)) - set(ex.ensemble_.used_features().tolist()))
    assert 4 in unused
    assert np.all(e.values[:, unused] == 0.0)
    assert np.all(e.interactions[:, unused, :] == 0.0) and np.all(e.interactions[:, :, unused] == 0.0)


def test_groups_match_brute_force_over_groups():
    X, y = make_data(11, 8)
    model = RandomForestRegressor(n_estimators=5, max_depth=6, random_state=0).fit(X, y)
    groups = {"a": [0, 3], "b": [1, 2, 7]}
    ex = TreeExplainer(groups=groups).fit(model, X[:6])
    assert ex.group_names_ == ["a", "b", "x4", "x5", "x6"]
    e = ex.explain_interactions(X[20:24])
    owner = ex.feature_to_group_
    np.testing.assert_allclose(e.values, brute_force_values(model.predict, X[20:24], X[:6], owner), atol=TOL)
    np.testing.assert_allclose(e.interactions, brute_force_interactions(model.predict, X[20:24], X[:6], owner),
                               atol=TOL)
    assert e.efficiency_error() < 1e-12


def test_shapley_taylor_rows_and_matrix_sum():
    X, y = make_data(2, 6)
    model = GradientBoostingRegressor(n_estimators=15, max_depth=4, random_state=0).fit(X, y)
    ex = TreeExplainer().fit(model, X[:12])
    e = ex.explain_interactions(X[30:36])
    M, P = e.interactions, e.pair_index()
    np.testing.assert_allclose(M, np.transpose(M, (0, 2, 1)), atol=0)
    idx = np.arange(6)
    # a row sums to its main effect plus half of its pair indices; the matrix sums to f(x) - mean f(B)
    rows = P[:, idx, idx] + 0.5 * (P.sum(axis=2) - P[:, idx, idx])
    np.testing.assert_allclose(M.sum(axis=2), rows, atol=1e-12)
    np.testing.assert_allclose(M.sum(axis=(1, 2)), e.prediction - e.base_value, atol=1e-12)
    # main effects are v({i}) - v(∅) of the averaged game
    bg = X[:12]
    for i in range(6):
        hyb = bg.copy()
        hyb[:, i] = X[30, i]
        assert M[0, i, i] == pytest.approx(model.predict(hyb).mean() - model.predict(bg).mean(), abs=TOL)


def test_shapiq_exact_stii_agrees():
    shapiq = pytest.importorskip("shapiq", reason="shapiq not installed (pip install shapiq)")
    from brittle.explain.brute_force import coalition_values

    X, y = make_data(4, 6)
    model = RandomForestRegressor(n_estimators=6, max_depth=5, random_state=0).fit(X, y)
    bg, x = X[:8], X[50]
    e = TreeExplainer().fit(model, bg).explain_interactions(x[None])
    v = coalition_values(model.predict, x, bg)

    def game(coalitions):
        c = np.asarray(coalitions, dtype=bool)
        return v[(c * (1 << np.arange(c.shape[1]))).sum(axis=1)]

    iv = shapiq.ExactComputer(game, n_players=6)("STII", order=2)
    pairs = iv.get_n_order_values(2)
    mains = iv.get_n_order_values(1)
    P = e.pair_index()[0]
    iu = np.triu_indices(6, 1)
    np.testing.assert_allclose(P[iu], pairs[iu], atol=TOL)
    np.testing.assert_allclose(np.diag(P), mains, atol=TOL)


def test_per_tree_values_sum_to_the_ensemble_and_explain_each_tree():
    X, y = make_data(8, 5)
    model = RandomForestRegressor(n_estimators=7, max_depth=4, random_state=0).fit(X, y)
    bg = X[:9]
    whole = TreeExplainer().fit(model, bg).explain(X[40:45])
    per = TreeExplainer(per_tree=True).fit(model, bg)
    e = per.explain(X[40:45])
    assert e.values.shape == (5, 7, 5)
    np.testing.assert_allclose(e.values.sum(axis=1), whole.values, atol=1e-12)
    for t, est in enumerate(model.estimators_):
        tree_pred = est.predict(X[40:45]) / 7
        np.testing.assert_allclose(e.values[:, t].sum(axis=1) + per.tree_base_values_[t], tree_pred, atol=1e-12)
    assert e.efficiency_error() < 1e-12


def test_plain_python_kernel_gives_the_same_numbers():
    X, y = make_data(9, 4)
    model = GradientBoostingRegressor(n_estimators=3, max_depth=3, random_state=0).fit(X, y)
    a = TreeExplainer().fit(model, X[:4]).explain_interactions(X[10:12])
    b = TreeExplainer(use_numba=False).fit(model, X[:4]).explain_interactions(X[10:12])
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.interactions, b.interactions)


def test_missing_values_follow_sklearn():
    X, y = make_data(12, 5)
    X[np.random.default_rng(0).random(X.shape) < 0.15] = np.nan
    model = DecisionTreeRegressor(max_depth=6, random_state=0).fit(X, y)
    ex = TreeExplainer().fit(model, X[:6])
    rows = X[20:26]
    e = ex.explain_interactions(rows)
    np.testing.assert_allclose(e.values, brute_force_values(model.predict, rows, X[:6]), atol=TOL)
    np.testing.assert_allclose(e.interactions, brute_force_interactions(model.predict, rows, X[:6]), atol=TOL)


# ---------------------------------------------------------------------------------------------------------
# XGBoost and LightGBM: brute force through the library's own leaf assignment (exact) and its predict


def library_game(ex):
    """f(Z) = intercept + Σ leaf values of the leaves *the library itself* assigns (pred_leaf), in float64."""
    ens = ex.ensemble_
    label = ens.extra.get("leaf_label")
    rows = ens.extra["tree_rows"]
    lookup = []
    for t in range(ens.n_trees):
        start = ens.roots[t]
        stop = ens.roots[t + 1] if t + 1 < ens.n_trees else ens.n_nodes
        nodes = np.arange(start, stop)
        keys = label[nodes] if label is not None else nodes - start
        lookup.append({int(k): ens.value[n] for k, n in zip(keys, nodes) if ens.feature[n] < 0})

    def f(Z):
        ids = np.asarray(ens.extra["leaf_ids"](Z)).reshape(len(Z), -1)[:, rows].astype(int)
        return ens.intercept + np.array([sum(lookup[t][ids[i, t]] for t in range(ens.n_trees))
                                         for i in range(len(Z))])
    return f


def boosted_models():
    out = []
    try:
        import xgboost as xgb

        out += [("xgb-reg", lambda: xgb.XGBRegressor(n_estimators=12, max_depth=4, n_jobs=1), "reg", "auto"),
                ("xgb-clf", lambda: xgb.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1), "bin", "auto"),
                ("xgb-multi", lambda: xgb.XGBClassifier(n_estimators=5, max_depth=3, n_jobs=1), "multi", 2)]
    except ImportError:
        out += [pytest.param("xgb", None, None, None, marks=pytest.mark.skip(reason="xgboost not installed"))]
    try:
        import lightgbm as lgb

        out += [("lgb-reg", lambda: lgb.LGBMRegressor(n_estimators=12, num_leaves=10, verbose=-1, n_jobs=1), "reg",
                 "auto"),
                ("lgb-clf", lambda: lgb.LGBMClassifier(n_estimators=10, num_leaves=8, verbose=-1, n_jobs=1), "bin",
                 "auto"),
                ("lgb-rf", lambda: lgb.LGBMRegressor(boosting_type="rf", n_estimators=6, num_leaves=8, subsample=0.7,
                                                     subsample_freq=1, verbose=-1, n_jobs=1), "reg", "auto"),
                ("lgb-multi", lambda: lgb.LGBMClassifier(n_estimators=5, num_leaves=6, verbose=-1, n_jobs=1), "multi",
                 1)]
    except ImportError:
        out += [pytest.param("lgb", None, None, None, marks=pytest.mark.skip(reason="lightgbm not installed"))]
    return out


@pytest.mark.parametrize("name,factory,task,output", boosted_models())
def test_boosted_libraries_match_brute_force(name, factory, task, output):
    X, y = make_data(21, 7, 240)
    rng = np.random.default_rng(0)
    X[rng.random(X.shape) < 0.08] = np.nan
    X[rng.random(X.shape) < 0.05] = 0.0
    target = {"reg": y, "bin": (y > np.median(y)).astype(int), "multi": np.digitize(y, np.quantile(y, [.33, .66]))}
    model = factory().fit(X, target[task])
    bg = X[rng.choice(len(X), 6, replace=False)]
    ex = TreeExplainer(output=output).fit(model, bg)
    rows = np.vstack([edge_rows(ex.ensemble_, np.nan_to_num(X), rng, 4), X[:2]])
    e = ex.explain_interactions(rows)
    f = library_game(ex)
    np.testing.assert_allclose(e.values, brute_force_values(f, rows, bg), atol=TOL, rtol=0)
    np.testing.assert_allclose(e.interactions, brute_force_interactions(f, rows, bg), atol=TOL, rtol=0)
    # and through the library's predict (XGBoost returns float32, hence the looser tolerance)
    raw = ex.ensemble_.extra["raw"]
    k = ex.ensemble_.extra["raw_index"]
    g = (lambda Z: np.asarray(raw(Z))[:, k]) if k is not None else raw
    np.testing.assert_allclose(e.values, brute_force_values(g, rows, bg), atol=2e-5)
    assert e.efficiency_error() < 1e-12 * (1 + np.abs(e.prediction).max())


# ---------------------------------------------------------------------------------------------------------
# the trees the model's own predict uses


@pytest.mark.parametrize("task", ["reg", "bin", "multi"])
def test_xgboost_early_stopping_explains_what_predict_returns(task):
    xgb = pytest.importorskip("xgboost", reason="xgboost not installed")
    X, y = make_data(5, 4, 300)
    target = {"reg": y, "bin": (y > np.median(y)).astype(int), "multi": np.digitize(y, np.quantile(y, [.33, .66]))}
    cls = xgb.XGBRegressor if task == "reg" else xgb.XGBClassifier
    model = cls(n_estimators=200, learning_rate=0.8, max_depth=3, early_stopping_rounds=2, n_jobs=1)
    model.fit(X[:200], target[task][:200], eval_set=[(X[200:], target[task][200:])], verbose=False)
    rounds = model.get_booster().num_boosted_rounds()
    assert model.best_iteration + 1 < rounds  # predict leaves trees out
    margin = model.predict(X[:40], output_margin=True).reshape(40, -1)  # what predict uses: best_iteration
    for k in ([0, 1, 2] if task == "multi" else ["auto"]):
        ex = TreeExplainer(output=k).fit(model, X[:30])
        e = ex.explain(X[:40])
        col = k if task == "multi" else 0
        np.testing.assert_allclose(e.base_value + e.values.sum(axis=1), margin[:, col], atol=2e-5)
        np.testing.assert_allclose(ex.base_value_, margin[:30, col].mean(), atol=2e-5)
        assert ex.n_trees_ == model.best_iteration + 1  # the trees of output k, one per round
        assert f"best_iteration={model.best_iteration}" in ex.output_
    # a Booster predicts with every round by default: so is it explained (and the description says so)
    booster = model.get_booster()
    ex = TreeExplainer(output=0 if task == "multi" else "auto").fit(booster, X[:30])
    full = booster.predict(xgb.DMatrix(X[:40]), output_margin=True)
    e = ex.explain(X[:40])
    np.testing.assert_allclose(e.base_value + e.values.sum(axis=1), full[:, 0] if task == "multi" else full,
                               atol=2e-5)
    assert ex.n_trees_ == rounds and "best_iteration" in ex.output_ and "not applied" in ex.output_


def test_lightgbm_random_forest_says_it_averages():
    lgb = pytest.importorskip("lightgbm", reason="lightgbm not installed")
    X, y = make_data(3, 4)
    model = lgb.LGBMRegressor(boosting_type="rf", n_estimators=5, num_leaves=6, subsample=0.7, subsample_freq=1,
                              verbose=-1, n_jobs=1).fit(X, y)
    ex = TreeExplainer().fit(model, X[:10])
    assert "averaged over the trees" in ex.output_
    e = ex.explain(X[:20])
    np.testing.assert_allclose(e.base_value + e.values.sum(axis=1), model.predict(X[:20]), atol=1e-9)
