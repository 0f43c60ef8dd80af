"""Study: how much of the averaged (mean) importance order do models agree on? (consensus partial orders)

On scikit-learn's diabetes, breast-cancer and a Friedman-1 sample, random forests are explained with exact
interventional TreeSHAP (100 explained rows, 100 background rows), and the global importances (mean |φ|) of K
models are compared: 10 seeds on the same data, 10 bootstrap resamples, and the Rashomon set of one forest's
tree averages (random 20-tree sub-forests whose held-out error is within 5% of the full forest's). For each
setting: the consensus partial order's cardinality, the share of the mean order's pairs it supports, and for
local attributions (per explained row) the mean support and the share of sign-ambiguous features.

    OMP_NUM_THREADS=1 python scripts/explain_study.py     # ~2-4 min on 2 cores; rewrites the study section of
                                                          # docs/explanations.md, docs/img/explain-*.svg and
                                                          # benchmarks/results/explain_study.json
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
K = 10


def datasets():
    from sklearn.datasets import load_breast_cancer, load_diabetes, make_friedman1

    d = load_diabetes()
    b = load_breast_cancer()
    Xf, yf = make_friedman1(n_samples=600, n_features=10, noise=1.0, random_state=0)
    return {"diabetes": (d.data, d.target, list(d.feature_names), "regression"),
            "breast_cancer": (b.data, b.target, [n.replace(" ", "_") for n in b.feature_names], "classification"),
            "friedman1": (Xf, yf, [f"x{j}" for j in range(10)], "regression")}


def forest(task, seed, n_estimators=100):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
    return cls(n_estimators=n_estimators, max_depth=6, min_samples_leaf=3, random_state=seed, n_jobs=1)


def local_stats(values):
    """values: (K, n, G) local attributions → mean support and mean share of ambiguous features per row."""
    from brittle.explain import consensus_order

    sup, amb = [], []
    for i in range(values.shape[1]):
        o = consensus_order(values[:, i, :])
        sup.append(o.support)
        amb.append(o.ambiguous.mean())
    return float(np.mean(sup)), float(np.mean(amb))


def run_setting(name, values, names):
    from brittle.explain import consensus_order

    glob = np.abs(values).mean(axis=1)  # (K, G) mean |φ| per model
    o = consensus_order(glob, names)
    lsup, lamb = local_stats(values)
    return o, {"setting": name, "K": int(values.shape[0]), "cardinality": o.cardinality,
               "mean_order_pairs": int(o.mean_order_pairs().sum()), "support": o.support,
               "local_support": lsup, "local_ambiguous_share": lamb,
               "top3_mean_order": [names[g] for g in np.argsort(-np.abs(o.mean_attribution))[:3]]}


def importance_figure(glob, names, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(glob.mean(axis=0))[-12:]
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(order) + 1.2))
    for r, g in enumerate(order):
        ax.plot([glob[:, g].min(), glob[:, g].max()], [r, r], color="#4060a0", lw=3, alpha=0.5)
        ax.scatter(glob[:, g], np.full(len(glob), r), s=10, color="#203060")
    ax.set_yticks(range(len(order)), [names[g] for g in order])
    ax.set_xlabel("mean |φ| per model (dots), range across models (bar)")
    ax.set_title(title, fontsize=10)
    fig.savefig(path, format="svg", bbox_inches="tight")
    plt.close(fig)


def main():
    from sklearn.model_selection import train_test_split

    from brittle.explain import TreeExplainer

    t0 = time.time()
    img = ROOT / "docs" / "img"
    img.mkdir(parents=True, exist_ok=True)
    results = {}
    for dname, (X, y, names, task) in datasets().items():
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
        rng = np.random.default_rng(0)
        bg = Xtr[rng.choice(len(Xtr), 100, replace=False)]
        fg = Xte[:100]
        rows = []

        def explain(model):
            return TreeExplainer().fit(model, bg).explain(fg).values

        seeds = np.stack([explain(forest(task, s).fit(Xtr, ytr)) for s in range(K)])
        o_seed, r = run_setting("10 seeds", seeds, names)
        rows.append(r)
        boots = []
        for s in range(K):
            idx = np.random.default_rng(100 + s).integers(0, len(Xtr), len(Xtr))
            boots.append(explain(forest(task, 0).fit(Xtr[idx], ytr[idx])))
        o_boot, r = run_setting("10 bootstraps", np.stack(boots), names)
        rows.append(r)
        # Rashomon set of tree averages: random 20-tree sub-forests within 5% of the full forest's error
        big = forest(task, 0, n_estimators=200).fit(Xtr, ytr)
        ex = TreeExplainer(per_tree=True).fit(big, bg)
        per_tree = ex.explain(fg).values * ex.n_trees_  # (n, T, G): each tree's own attributions
        if task == "classification":
            tree_pred = np.stack([t.predict_proba(Xte)[:, 1] for t in big.estimators_], axis=1)
            loss = lambda p: float(np.mean((p - yte) ** 2))  # noqa: E731 - Brier score
        else:
            tree_pred = np.stack([t.predict(Xte) for t in big.estimators_], axis=1)
            loss = lambda p: float(np.mean((p - yte) ** 2))  # noqa: E731
        full = loss(tree_pred.mean(axis=1))
        members = []
        rs = np.random.default_rng(7)
        for _ in range(400):
            sub = rs.choice(big.n_estimators, 20, replace=False)
            if loss(tree_pred[:, sub].mean(axis=1)) <= 1.05 * full:
                members.append(sub)
            if len(members) == 50:
                break
        rash = np.stack([per_tree[:, sub].mean(axis=1) for sub in members])
        o_rash, r = run_setting(f"RF Rashomon set ({len(members)} sub-forests)", rash, names)
        r["rashomon_tolerance"] = "held-out MSE/Brier within 5% of the 200-tree forest"
        rows.append(r)
        for tag, o, vals in (("seeds", o_seed, seeds), ("rashomon", o_rash, rash)):
            (img / f"explain-{dname}-{tag}-hasse.svg").write_text(o.to_svg())
        importance_figure(np.abs(seeds).mean(axis=1), names, img / f"explain-{dname}-seeds-importance.svg",
                          f"{dname}: global importance of 10 random forests (seeds)")
        results[dname] = {"task": task, "n_features": len(names), "rows": rows}
        print(dname, json.dumps(rows, indent=1), flush=True)
    results["seconds"] = time.time() - t0
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "explain_study.json").write_text(json.dumps(results, indent=2))
    write_doc(results)


def write_doc(results):
    lines = ["| data set | d | models compared | consensus pairs / mean-order pairs | support | "
             "local support (per row) | sign-ambiguous features (per row) | top 3 (mean order) |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for dname, res in results.items():
        if dname == "seconds":
            continue
        for r in res["rows"]:
            lines.append(f"| {dname} | {res['n_features']} | {r['setting']} | {r['cardinality']} / "
                         f"{r['mean_order_pairs']} | {100 * r['support']:.0f}% | {100 * r['local_support']:.0f}% | "
                         f"{100 * r['local_ambiguous_share']:.0f}% | {', '.join(r['top3_mean_order'])} |")
    table = "\n".join(lines)
    doc = ROOT / "docs" / "explanations.md"
    text = doc.read_text() if doc.exists() else "<!-- study:begin -->\n<!-- study:end -->\n"
    block = f"<!-- study:begin -->\n{table}\n\n_Generated by `scripts/explain_study.py` in {results['seconds']:.0f} s._\n<!-- study:end -->"
    text = re.sub(r"<!-- study:begin -->.*?<!-- study:end -->", lambda _: block, text, flags=re.S)
    doc.write_text(text)


if __name__ == "__main__":
    import argparse

    # no options: the parser gives --help (which once started the study and rewrote the tracked files)
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                            epilog="Rewrites the study section of docs/explanations.md, docs/img/explain-*.svg "
                                   "and benchmarks/results/explain_study.json.").parse_args()
    main()
