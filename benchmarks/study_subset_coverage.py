"""Coverage of the 95% intervals of `brittle.analysis.subset.estimate_robust_accuracy`, on synthetic populations
whose robust accuracy is known (the table in docs/margin-consistency.md, section 4).

Population: input margins ~ Exponential(mean 0.2), 90% correctly classified, logit margin = input margin +
Gaussian noise (the score's inconsistency), ε = 0.15. For each cell, ``--repeats`` seeds draw n points, run the
estimator (``n_boot=100``) and record whether its interval holds the truth.

    OMP_NUM_THREADS=1 python benchmarks/study_subset_coverage.py --repeats 300 \\
        --out benchmarks/results/subset_coverage.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from brittle.analysis.subset import estimate_robust_accuracy

CELLS = ((2000, 100, 0.1), (2000, 50, 0.3), (5000, 200, 0.2))  # (population, n, noise)
METHODS = (("isotonic", "random"), ("isotonic", "adaptive"), ("stratified", "random"), ("stratified", "adaptive"))


def cell(population: int, n: int, noise: float, method: str, selection: str, repeats: int, eps: float = 0.15) -> dict:
    rng = np.random.default_rng(5)
    margin = rng.exponential(0.2, size=population)
    correct = rng.random(population) < 0.9
    logit = margin + rng.normal(0.0, noise, size=population)
    truth = float(np.mean(correct & (margin > eps)))
    t0 = time.perf_counter()
    est, covered, width = [], [], []
    for seed in range(repeats):
        r = estimate_robust_accuracy(logit, correct, margin, eps, n, method=method, selection=selection,
                                     seed=1000 + seed, n_boot=100)
        est.append(r.estimate)
        covered.append(r.ci_low <= truth <= r.ci_high)
        width.append(r.ci_high - r.ci_low)
    est = np.array(est)
    return {"population": population, "n": n, "noise": noise, "method": method, "selection": selection,
            "repeats": repeats, "truth": truth, "bias": float(est.mean() - truth), "sd": float(est.std()),
            "coverage": float(np.mean(covered)), "mean_width": float(np.mean(width)),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--out", default="benchmarks/results/subset_coverage.json")
    args = ap.parse_args()
    rows = []
    for population, n, noise in CELLS:
        for method, selection in METHODS:
            rows.append(cell(population, n, noise, method, selection, args.repeats))
            r = rows[-1]
            print(f"N={population} n={n} noise={noise} {method}/{selection}: coverage {r['coverage']:.3f} "
                  f"bias {r['bias']:+.4f} ({r['seconds']} s)", flush=True)
            with open(args.out, "w") as fh:  # written after every cell: an interrupted run keeps what it has
                json.dump({"machine": platform.processor() or platform.machine(), "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
