"""Choosing which detectors to combine without any OOD data: synthetic outliers built from ID data.

Following the Outlier Exposure idea (Hendrycks, Mazeika & Dietterich, ICLR 2019) as Novello et al. suggest,
a candidate combination (a subset of detectors and a strategy) is judged by how well it separates held-out
ID inputs from **synthetic outliers made from ID inputs** — never from the real OOD sets:

* ``noise`` — ID images plus strong Gaussian noise (σ = 0.5, clipped to the domain);
* ``patch_shuffle`` — the image cut into a 4 × 4 grid of patches, patches permuted (per image): local
  strokes survive, the global shape does not. (Deliberately *not* a fixed pixel permutation, which is one of
  the real OOD sets of the MNIST benchmark — that would leak the test set into the choice.)
* ``class_mix`` — the average of two ID images of different classes (an input between two classes);
* ``corruption`` — a heavy blur (5 × 5 box, twice) with a random quarter of the image occluded.

Inputs that are not images (``(N, D)``) get the same ideas on the feature vector: noise, a per-input
permutation of blocks of features, class mixing, and occlusion of a random quarter of the features.

`rank_subsets` scores every subset of the candidate detectors (sizes ``sizes``) under every strategy by the
mean AUROC of ID validation inputs vs the synthetic sets (the strategy fitted on a separate ID part), so the
choice uses ID data only. The study script then compares the chosen subset on the real OOD sets with the best
subset in hindsight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from ...errors import InputError
from .base import make_combiner

SYNTHETIC_SETS = ("noise", "patch_shuffle", "class_mix", "corruption")


def synthetic_outliers(x: Any, y: Any = None, *, seed: int = 0, kinds: Sequence[str] = SYNTHETIC_SETS,
                       domain: tuple[float, float] = (0.0, 1.0)) -> dict[str, torch.Tensor]:
    """``{kind: tensor}``: synthetic outliers of the same shape as ``x`` (module docstring), seeded."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    if x.ndim < 2 or len(x) < 2:
        raise InputError(f"inputs have shape {tuple(x.shape)}: need at least 2 inputs of shape (N, ...)",
                         "pass ID inputs as an (N, D) or (N, C, H, W) array")
    unknown = [k for k in kinds if k not in SYNTHETIC_SETS]
    if unknown:
        raise InputError(f"unknown synthetic outlier kind {unknown[0]!r}", f"use some of {SYNTHETIC_SETS}")
    lo, hi = domain
    g = torch.Generator().manual_seed(int(seed))
    n = len(x)
    image = x.ndim == 4 and x.shape[2] >= 4 and x.shape[3] >= 4
    out: dict[str, torch.Tensor] = {}
    for kind in kinds:
        if kind == "noise":
            out[kind] = (x + 0.5 * (hi - lo) * torch.randn(x.shape, generator=g)).clamp(lo, hi)
        elif kind == "patch_shuffle":
            if image:
                c, h, w = x.shape[1:]
                ph, pw = h // 4, w // 4
                core = x[:, :, :4 * ph, :4 * pw].reshape(n, c, 4, ph, 4, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, 16, c, ph, pw)
                perm = torch.stack([torch.randperm(16, generator=g) for _ in range(n)])
                core = core[torch.arange(n)[:, None], perm]
                img = x.clone()
                img[:, :, :4 * ph, :4 * pw] = core.reshape(n, 4, 4, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, 4 * ph, 4 * pw)
                out[kind] = img
            else:
                flat = x.reshape(n, -1)
                blocks = np.array_split(np.arange(flat.shape[1]), min(16, flat.shape[1]))
                res = flat.clone()
                for i in range(n):
                    order = torch.randperm(len(blocks), generator=g).tolist()
                    res[i] = torch.cat([flat[i, blocks[j]] for j in order])
                out[kind] = res.reshape(x.shape)
        elif kind == "class_mix":
            partner = torch.randperm(n, generator=g)
            if y is not None:
                yy = torch.as_tensor(np.asarray(y))
                for _ in range(10):                       # re-draw partners of the same class
                    same = yy[partner] == yy
                    if not same.any():
                        break
                    partner[same] = torch.randint(0, n, (int(same.sum()),), generator=g)
            out[kind] = 0.5 * x + 0.5 * x[partner]
        elif kind == "corruption":
            if image:
                b = x
                for _ in range(2):
                    b = torch.nn.functional.avg_pool2d(b, 5, stride=1, padding=2, count_include_pad=False)
                h, w = x.shape[2:]
                b = b.clone()
                oy = torch.randint(0, h - h // 2 + 1, (n,), generator=g)
                ox = torch.randint(0, w - w // 2 + 1, (n,), generator=g)
                for i in range(n):
                    b[i, :, oy[i]:oy[i] + h // 2, ox[i]:ox[i] + w // 2] = lo
                out[kind] = b
            else:
                flat = x.reshape(n, -1).clone()
                q = max(1, flat.shape[1] // 4)
                start = torch.randint(0, flat.shape[1] - q + 1, (n,), generator=g)
                for i in range(n):
                    flat[i, start[i]:start[i] + q] = lo
                out[kind] = flat.reshape(x.shape)
    return out


def _auroc(id_s: np.ndarray, ood_s: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.zeros(len(id_s)), np.ones(len(ood_s))], np.r_[id_s, ood_s]))


def evaluate_subset(scores: dict[str, dict[str, np.ndarray]], subset: Sequence[str], strategy: str, *,
                    fit_set: str, id_set: str, ood_sets: Sequence[str], **params: Any) -> dict[str, float]:
    """AUROC of one combination per OOD set: ``scores[detector][set]`` are oriented higher = more OOD; the
    strategy is fitted on ``fit_set`` and the ID side of every AUROC is ``id_set``."""
    def mat(set_name: str) -> np.ndarray:
        return np.column_stack([scores[d][set_name] for d in subset])

    comb = make_combiner(strategy, **params).fit(mat(fit_set))
    s_id = comb.score(mat(id_set))
    return {o: _auroc(s_id, comb.score(mat(o))) for o in ood_sets}


def rank_subsets(scores: dict[str, dict[str, np.ndarray]], detectors: Sequence[str], *,
                 strategies: Sequence[str] = ("vote", "ecdf", "copula", "ot"), sizes: Sequence[int] = (2, 3),
                 fit_set: str = "id_val_a", id_set: str = "id_val_b", synthetic_sets: Sequence[str] = SYNTHETIC_SETS,
                 progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Every subset (of the given sizes) × strategy, ranked by mean AUROC against the synthetic sets.

    ``scores[detector][set]`` must hold ``fit_set``, ``id_set`` and every synthetic set; columns oriented
    higher = more OOD. Single detectors (size 1) are ranked by their raw scores' AUROC.
    """
    missing = [d for d in detectors if d not in scores]
    if missing:
        raise InputError(f"no scores for detector {missing[0]!r}", "score every candidate detector on every set")
    rows = []
    for size in sizes:
        for subset in combinations(detectors, size):
            if size == 1:
                d = subset[0]
                aucs = {o: _auroc(scores[d][id_set], scores[d][o]) for o in synthetic_sets}
                rows.append({"subset": subset, "strategy": "single", **aucs})
                continue
            for strategy in strategies:
                if progress:
                    progress(f"{'+'.join(subset)} / {strategy}")
                aucs = evaluate_subset(scores, subset, strategy, fit_set=fit_set, id_set=id_set,
                                       ood_sets=synthetic_sets)
                rows.append({"subset": subset, "strategy": strategy, **aucs})
    df = pd.DataFrame(rows)
    df["mean_synthetic_auroc"] = df[list(synthetic_sets)].mean(axis=1)
    return df.sort_values("mean_synthetic_auroc", ascending=False, kind="stable").reset_index(drop=True)
