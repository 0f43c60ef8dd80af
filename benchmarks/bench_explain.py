"""Benchmark: brittle's exact interventional TreeSHAP and Shapley–Taylor interactions vs shap and shapiq.

1. Time per (foreground, background) pair of interventional TreeSHAP on 100-tree ensembles (random forest,
   gradient boosting, XGBoost, LightGBM) at 100 × 100 and 1,000 × 100, against shap's TreeExplainer
   (feature_perturbation="interventional"); agreement with each other and, where they disagree, with a brute-force
   2^d enumeration through the model's own predict (which one is right).
2. Order-2 Shapley–Taylor matrices of one point against shap's Exact(..., interactions=2) and shapiq's
   ExactComputer("STII") for d = 10..16 and beyond (exhaustive methods capped by time and memory).

    OMP_NUM_THREADS=1 python benchmarks/bench_explain.py            # writes benchmarks/results/explain.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from brittle.core.provenance import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def models(X, y, seed=0):
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    out = {"random_forest": RandomForestRegressor(n_estimators=100, max_depth=8, random_state=seed, n_jobs=1),
           "gradient_boosting": GradientBoostingRegressor(n_estimators=100, max_depth=4, random_state=seed)}
    try:
        import xgboost

        out["xgboost"] = xgboost.XGBRegressor(n_estimators=100, max_depth=6, n_jobs=1, random_state=seed)
    except ImportError:
        pass
    try:
        import lightgbm

        out["lightgbm"] = lightgbm.LGBMRegressor(n_estimators=100, num_leaves=31, n_jobs=1, verbose=-1,
                                                 random_state=seed)
    except ImportError:
        pass
    return {k: m.fit(X, y) for k, m in out.items()}


def treeshap_section(sizes, check_rows=3):
    import shap
    from sklearn.datasets import load_diabetes

    from brittle.explain import TreeExplainer
    from brittle.explain.brute_force import brute_force_values

    X, y = load_diabetes(return_X_y=True)
    rng = np.random.default_rng(0)
    rows = []
    for name, model in models(X, y).items():
        ex = TreeExplainer()
        ex.fit(model, X[:5]).explain(X[:2])  # compile / warm up
        for n_fg, n_bg in sizes:
            bg = X[rng.choice(len(X), n_bg, replace=False)]
            fg = X[rng.integers(0, len(X), n_fg)]
            t_b, e = timed(lambda: TreeExplainer().fit(model, bg).explain(fg))
            sx = shap.TreeExplainer(model, data=bg, feature_perturbation="interventional")
            t_s, sv = timed(lambda: np.asarray(sx.shap_values(fg, check_additivity=False)))
            pred = ex.fit(model, bg).ensemble_.extra["raw"](fg)
            shap_eff = np.abs(sv.sum(1) + float(np.ravel(sx.expected_value)[0]) - pred)
            diff = np.abs(sv - e.values).max(axis=1)
            verdict = None
            worst = np.argsort(-diff)[:check_rows]
            if diff.max() > 1e-6:
                f = ex.ensemble_.extra["raw"]
                bf = brute_force_values(f, fg[worst], bg[:20])
                ours = TreeExplainer().fit(model, bg[:20]).explain(fg[worst]).values
                theirs = np.asarray(shap.TreeExplainer(model, data=bg[:20], feature_perturbation="interventional")
                                    .shap_values(fg[worst], check_additivity=False))
                verdict = {"rows_checked": int(len(worst)), "background_for_check": 20,
                           "brittle_vs_brute_force": float(np.abs(ours - bf).max()),
                           "shap_vs_brute_force": float(np.abs(theirs - bf).max())}
            rows.append({"model": name, "foreground": n_fg, "background": n_bg,
                         "brittle_s": t_b, "shap_s": t_s,
                         "brittle_us_per_pair": 1e6 * t_b / (n_fg * n_bg), "shap_us_per_pair": 1e6 * t_s / (n_fg * n_bg),
                         "shap_over_brittle": t_s / t_b,
                         "max_abs_diff": float(diff.max()), "rows_differing_1e-6": int((diff > 1e-6).sum()),
                         "brittle_efficiency_error": e.efficiency_error(),
                         "shap_efficiency_error": float(shap_eff.max()), "brute_force_check": verdict})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def sti_section(dims, n_bg, shap_cap_d, shapiq_cap_d, budget_s):
    from sklearn.ensemble import GradientBoostingRegressor

    from brittle.explain import TreeExplainer
    from brittle.explain.brute_force import coalition_values

    rows = []
    try:  # warm up shap's Exact explainer (numba compilation) outside the timings
        import shap

        Xw = np.random.default_rng(0).normal(size=(50, 4))
        mw = GradientBoostingRegressor(n_estimators=5).fit(Xw, Xw[:, 0])
        shap.explainers.Exact(mw.predict, shap.maskers.Independent(Xw[:5], max_samples=5))(Xw[:1], interactions=2)
    except ImportError:
        pass
    for d in dims:
        rng = np.random.default_rng(d)
        X = rng.normal(size=(600, d))
        y = X[:, 0] * X[:, 1] + np.sin(X[:, 2]) + X[:, 3:].sum(axis=1) * 0.3 + X[:, d - 1] * X[:, d - 2]
        model = GradientBoostingRegressor(n_estimators=100, max_depth=4, random_state=0).fit(X, y)
        bg, x = X[:n_bg], X[n_bg:n_bg + 1]
        TreeExplainer().fit(model, bg[:2]).explain_interactions(x)  # warm up
        t_b, e = timed(lambda: TreeExplainer().fit(model, bg).explain_interactions(x), repeat=3)
        row = {"d": d, "background": n_bg, "brittle_s": t_b, "shap_exact_s": None, "shapiq_exact_s": None,
               "shap_vs_brittle_max_abs": None, "shap_halved_vs_brittle_max_abs": None,
               "shapiq_vs_brittle_max_abs": None}
        P = e.pair_index()[0]
        if d <= shapiq_cap_d:
            try:
                import shapiq

                def run_shapiq():
                    v = coalition_values(model.predict, x[0], bg)

                    def game(c):
                        c = np.asarray(c, dtype=bool)
                        return v[(c * (1 << np.arange(d))).sum(axis=1)]
                    return shapiq.ExactComputer(game, n_players=d)("STII", order=2)

                t_q, iv = timed(run_shapiq)
                pairs, mains = iv.get_n_order_values(2), iv.get_n_order_values(1)
                iu = np.triu_indices(d, 1)
                row["shapiq_exact_s"] = t_q
                row["shapiq_vs_brittle_max_abs"] = float(max(np.abs(pairs[iu] - P[iu]).max(),
                                                             np.abs(mains - np.diag(P)).max()))
            except ImportError:
                pass
        if d <= shap_cap_d:
            try:
                import shap

                masker = shap.maskers.Independent(bg, max_samples=n_bg)
                sx = shap.explainers.Exact(model.predict, masker)
                t_s, res = timed(lambda: sx(x, interactions=2))
                M = np.asarray(res.values)[0]
                off = ~np.eye(d, dtype=bool)
                row["shap_exact_s"] = t_s
                row["shap_vs_brittle_max_abs"] = float(np.abs(M[off] - P[off]).max())
                row["shap_halved_vs_brittle_max_abs"] = float(np.abs(M[off] - e.interactions[0][off]).max())
                row["shap_diag_vs_brittle_main_max_abs"] = float(np.abs(np.diag(M) - np.diag(P)).max())
            except ImportError:
                pass
        print(json.dumps(row), flush=True)
        rows.append(row)
        if row["shap_exact_s"] and row["shap_exact_s"] > budget_s:
            shap_cap_d = min(shap_cap_d, d)
        if row["shapiq_exact_s"] and row["shapiq_exact_s"] > budget_s:
            shapiq_cap_d = min(shapiq_cap_d, d)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "explain.json"))
    p.add_argument("--quick", action="store_true", help="100 × 100 only, d up to 12")
    p.add_argument("--sti-background", type=int, default=20)
    p.add_argument("--shap-cap-d", type=int, default=12)
    p.add_argument("--shapiq-cap-d", type=int, default=16)
    p.add_argument("--budget-s", type=float, default=60.0, help="stop an exhaustive method once a point costs more")
    args = p.parse_args()
    import shap
    import sklearn

    from brittle import __version__
    from brittle.explain._kernel import HAVE_NUMBA

    versions = {"brittle": __version__, "shap": shap.__version__, "scikit-learn": sklearn.__version__,
                "numpy": np.__version__, "python": platform.python_version(), "numba": HAVE_NUMBA}
    from importlib import metadata

    for mod in ("shapiq", "xgboost", "lightgbm", "numba"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
        except AttributeError:
            versions[mod] = metadata.version(mod)
    sizes = [(100, 100)] if args.quick else [(100, 100), (1000, 100)]
    dims = [10, 12] if args.quick else [10, 12, 14, 16, 20, 30]
    t0 = time.time()
    result = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                          "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
              "versions": versions, "command": "OMP_NUM_THREADS=1 python " + " ".join(["benchmarks/bench_explain.py",
                                                                                       *sys.argv[1:]]),
              "treeshap": treeshap_section(sizes),
              "shapley_taylor": sti_section(dims, args.sti_background, args.shap_cap_d, args.shapiq_cap_d,
                                            args.budget_s)}
    result["seconds"] = time.time() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
