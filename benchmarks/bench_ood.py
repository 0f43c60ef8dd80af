"""Fit + score time of brittle's OOD detectors per 1,000 images against a reference implementation on the
same features.

    OMP_NUM_THREADS=1 python benchmarks/bench_ood.py [--repeat 3]

The reference libraries do not install here: pytorch-ood needs torchvision (with CPU torch its import fails;
installing it pulls the ~5.5 GB CUDA torch pair) and oodeel pins numpy<=1.26. So the reference is the obvious
plain numpy / scikit-learn implementation of each paper's official code (the same code the tests compare
scores with): softmax/logsumexp from scipy, class Gaussians with ``np.linalg.pinv``, sklearn
``NearestNeighbors`` (brute) for KNN, the official ViM numpy code (``EmpiricalCovariance`` + ``np.linalg.eig``),
ReAct as clip + matmul + logsumexp. If pytorch-ood becomes importable it is timed too (logit detectors).

Setting: zoo model ``standard``, features of the penultimate layer from one forward pass (timed separately),
fit on 4,000 MNIST images, score 10,000 (5,000 MNIST test + 5,000 Fashion-MNIST). Times are the median of
``--repeat`` runs, in milliseconds per 1,000 images (fit: per 1,000 fit images; score: per 1,000 scored).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from scipy.special import logsumexp, softmax


def timed(fn, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import torch

    from brittle.data.loading import load_mnist, validate
    from brittle.data.ood_sets import load_fashion_mnist_test
    from brittle.models import zoo
    from brittle.ood import KNN, MSP, RMD, Energy, Mahalanobis, ReAct, ViM
    from brittle.ood.cache import FeatureCache

    model = zoo.load("standard")
    mn = load_mnist()
    fit = mn.subset(slice(0, 4000))
    test = validate(torch.cat([mn.x[5000:], load_fashion_mnist_test().x[:5000]]), None)
    cache = FeatureCache(model)
    t_fwd, _ = timed(lambda: FeatureCache(model).get("t", test, ["6"]), args.repeat)
    ff, ft = cache.get("fit", fit, ["6"]), cache.get("test", test, ["6"])
    y = fit.y.numpy()
    h_fit, h = ff.output("6").astype(np.float64), ft.output("6").astype(np.float64)
    z_fit, z = ff.logits.astype(np.float64), ft.logits.astype(np.float64)
    W = model[7].weight.detach().double().numpy()
    b = model[7].bias.detach().double().numpy()
    n_fit, n = len(h_fit), len(h)

    # --- plain numpy / sklearn references -------------------------------------------------------------
    def ref_gauss():
        mus = np.stack([h_fit[y == k].mean(0) for k in range(10)])
        cen = h_fit - mus[y]
        return mus, np.linalg.pinv(cen.T @ cen / n_fit)

    def ref_md(q, mus, prec):
        return np.stack([np.einsum("ij,jk,ik->i", q - m, prec, q - m) for m in mus], 1)

    def ref_vim_fit():
        from sklearn.covariance import EmpiricalCovariance

        u = -np.linalg.pinv(W) @ b
        ec = EmpiricalCovariance(assume_centered=True).fit(h_fit - u)
        vals, vecs = np.linalg.eig(ec.covariance_)
        ns = np.ascontiguousarray(vecs.T[np.argsort(vals * -1)[50:]].T).real
        alpha = z_fit.max(-1).mean() / np.linalg.norm((h_fit - u) @ ns, axis=-1).mean()
        return u, ns, alpha

    def ref_knn_fit():
        from sklearn.neighbors import NearestNeighbors

        bank = h_fit / np.linalg.norm(h_fit, axis=1, keepdims=True)
        return NearestNeighbors(n_neighbors=50, algorithm="brute").fit(bank)

    def ref_knn_score(nn_):
        q = h / np.linalg.norm(h, axis=1, keepdims=True)
        return nn_.kneighbors(q, 50)[0][:, -1]

    refs = {
        "msp": (lambda: None, lambda _: -softmax(z, 1).max(1)),
        "energy": (lambda: None, lambda _: -logsumexp(z, 1)),
        "mahalanobis": (ref_gauss, lambda s: ref_md(h, *s).min(1)),
        "rmd": (lambda: (ref_gauss(), h_fit.mean(0), np.linalg.pinv(np.cov(h_fit.T, bias=True))),
                lambda s: ref_md(h, *s[0]).min(1) - ref_md(h, s[1][None], s[2])[:, 0]),
        "knn": (ref_knn_fit, ref_knn_score),
        "vim": (ref_vim_fit, lambda s: np.linalg.norm((h - s[0]) @ s[1], axis=-1) * s[2] - logsumexp(z, 1)),
        "react": (lambda: np.percentile(h_fit.ravel(), 90),
                  lambda c: -logsumexp(np.minimum(h, c) @ W.T + b, 1)),
    }
    ours = {"msp": MSP, "energy": Energy, "mahalanobis": Mahalanobis, "rmd": RMD, "knn": KNN,
            "vim": lambda: ViM(dim=50), "react": ReAct}
    rows = []
    for name, (rfit, rscore) in refs.items():
        def our_fit(name=name):
            return ours[name]().bind(model).fit(ff, y)
        t_of, det = timed(our_fit, args.repeat)
        t_os, s_ours = timed(lambda det=det: det.score(ft), args.repeat)
        t_rf, state = timed(rfit, args.repeat)
        t_rs, s_ref = timed(lambda state=state, rscore=rscore: rscore(state), args.repeat)
        from sklearn.metrics import roc_auc_score

        lab = np.r_[np.zeros(5000), np.ones(5000)]
        d_auc = abs(roc_auc_score(lab, s_ours) - roc_auc_score(lab, s_ref))
        rows.append((name, 1e6 * t_of / n_fit, 1e6 * t_os / n, 1e6 * t_rf / n_fit, 1e6 * t_rs / n, d_auc))
    try:
        import pytorch_ood  # noqa: F401
        ref_lib = "pytorch-ood importable (not timed here)"
    except Exception:  # noqa: BLE001
        ref_lib = "pytorch-ood / oodeel not importable: reference = plain numpy/sklearn"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}; {ref_lib}")
    print(f"forward pass (logits + penultimate layer): {1e6 * t_fwd / n:.1f} ms per 1,000 images\n")
    print("| detector | brittle fit | brittle score | reference fit | reference score | |ΔAUROC| |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, a, bb, c, d, e in rows:
        print(f"| {name} | {a:.2f} | {bb:.2f} | {c:.2f} | {d:.2f} | {e:.1e} |")
    print("\n(ms per 1,000 images; fit per 1,000 fit images, score per 1,000 scored images)")


if __name__ == "__main__":
    main()
