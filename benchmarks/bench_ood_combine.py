"""Fit + score time of each combination strategy against a straightforward reference.

    OMP_NUM_THREADS=1 python benchmarks/bench_ood_combine.py [--n-fit 1000] [--n-score 20000] [--d 3]

Synthetic correlated score matrices (ID fit ``n_fit × d``, queries ``n_score × d``). References:

* ECDF — brute-force component-wise count (`ecdf_brute_force`, numpy, chunked) vs brittle's bit sets;
* copula — the same Gaussian copula scored with `scipy.stats.multivariate_normal.cdf` (one call over all
  queries; scipy's own QMC) vs brittle's vectorised Genz integrand (``n_qmc = 512``);
* vote — a per-detector loop of ``np.searchsorted`` ranks (what one writes by hand) vs brittle's marginals;
* OT — POT's exact ``ot.emd`` is the fit in both; the reference scores by the nearest fitted point's rank
  (``scipy.spatial.cKDTree``), brittle by the smoothed interpolation.

Each timing is the best of ``--repeat`` runs; results also state agreement (max |difference| of scores, or of
AUROC for OT whose references differ by design).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def best(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-fit", type=int, default=1000)
    ap.add_argument("--n-score", type=int, default=20000)
    ap.add_argument("--d", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from scipy.spatial import cKDTree
    from scipy.stats import multivariate_normal
    from sklearn.metrics import roc_auc_score

    import ot  # noqa: F401  (imported before timing: its first import takes seconds)

    from brittle.ood.combine import ecdf_brute_force, make_combiner

    rng = np.random.default_rng(0)
    cov = 0.5 * np.eye(args.d) + 0.5
    fit = rng.multivariate_normal(np.zeros(args.d), cov, args.n_fit)
    q = np.r_[rng.multivariate_normal(np.zeros(args.d), cov, args.n_score // 2),
              rng.multivariate_normal(np.full(args.d, 1.5), cov, args.n_score - args.n_score // 2)]
    y = np.r_[np.zeros(args.n_score // 2), np.ones(args.n_score - args.n_score // 2)]
    rows = []

    def add(strategy, impl, t_fit, t_score, agreement):
        rows.append({"strategy": strategy, "impl": impl, "fit_s": t_fit, "score_s": t_score,
                     "per_1000_s": (t_fit + t_score) / args.n_score * 1000, "agreement": agreement})

    # ECDF
    tf, c = best(lambda: make_combiner("ecdf").fit(fit), args.repeat)
    ts, s = best(lambda: c.score(q), args.repeat)
    tr, r = best(lambda: ecdf_brute_force(fit, q), args.repeat)
    add("ecdf", "brittle (bit sets)", tf, ts, float(np.abs(s - r).max()))
    add("ecdf", "brute force (numpy)", 0.0, tr, 0.0)
    # copula
    tf, c = best(lambda: make_combiner("copula").fit(fit), args.repeat)
    ts, s = best(lambda: c.score(q), args.repeat)
    z = c.marginals_.transform(q)
    mvn = multivariate_normal(np.zeros(args.d), c.corr_)
    tr, r = best(lambda: mvn.cdf(z), 1)
    add("copula", "brittle (Genz, vectorised)", tf, ts, float(np.abs(s - r).max()))
    add("copula", "scipy multivariate_normal.cdf", tf, tr, 0.0)
    # vote
    tf, c = best(lambda: make_combiner("vote").fit(fit), args.repeat)
    ts, s = best(lambda: c.score(q), args.repeat)

    def vote_ref():
        srt = np.sort(fit, axis=0)
        u = np.column_stack([np.searchsorted(srt[:, k], q[:, k], side="right") for k in range(args.d)]) / len(fit)
        return -np.sort(-u, axis=1)[:, args.d // 2]

    tr, r = best(vote_ref, args.repeat)
    add("vote", "brittle (marginal normal scores)", tf, ts,
        float(abs(roc_auc_score(y, s) - roc_auc_score(y, r))))
    add("vote", "searchsorted ranks (hand-written)", 0.0, tr, 0.0)
    # OT
    tf, c = best(lambda: make_combiner("ot").fit(fit), 1)
    ts, s = best(lambda: c.score(q), args.repeat)

    def ot_ref():
        tree = cKDTree(c.points_)
        _, idx = tree.query((q - c.mean_) / c.std_)
        return np.linalg.norm(c.fitted_map_[idx], axis=1)

    tr, r = best(ot_ref, args.repeat)
    add("ot", "brittle (emd + smoothed interpolation)", tf, ts,
        float(abs(roc_auc_score(y, s) - roc_auc_score(y, r))))
    add("ot", "emd + nearest fitted point (cKDTree)", tf, tr, 0.0)

    meta = {"n_fit": args.n_fit, "n_score": args.n_score, "d": args.d, "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS"), "pot": ot.__version__}
    print(json.dumps(meta))
    print("| strategy | implementation | fit (s) | score (s) | per 1,000 queries (s) | agreement |")
    print("|---|---|---|---|---|---|")
    for r_ in rows:
        print(f"| {r_['strategy']} | {r_['impl']} | {r_['fit_s']:.3f} | {r_['score_s']:.3f} | {r_['per_1000_s']:.4f} | "
              f"{r_['agreement']:.2g} |")


if __name__ == "__main__":
    main()
