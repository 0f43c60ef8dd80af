"""Calibration-set selectors over a candidate pool, with a budget of ``n`` samples (COLA-style curation).

- ``RandomSelector``: ``n`` candidates uniformly at random;
- ``DomainSelector``: ``n`` candidates drawn evenly from the chosen target domains only;
- ``KMeansSelector``: k-means (scikit-learn) with ``k = n`` over the candidates' pooled activations at a chosen
  layer; the candidate nearest to each centroid is taken;
- ``KCenterSelector``: greedy farthest-first traversal (k-center), which minimises the largest distance from any
  candidate to the selection (within a factor 2) — the selection *covers* the activation space.

Activations are the mean over tokens of the hidden state after decoder layer ``layer`` (``hidden_states[layer]``
of a Hugging Face model; 0 is the embedding output), standardised per feature before clustering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from .data import DOMAINS, CandidatePool


@dataclass
class Selection:
    """Chosen pool indices, the selector's name, and (for activation selectors) the coverage radius achieved."""

    indices: list[int]
    selector: str
    coverage_radius: float = math.nan
    domain_counts: dict[str, int] = field(default_factory=dict)


def _check_n(n: int, size: int) -> None:
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise InputError(f"budget n={n!r} must be a positive integer", "pass e.g. n=32")
    if n > size:
        raise InputError(f"budget n={n} exceeds the pool of {size} candidates", "lower n or build a larger pool")


@torch.no_grad()
def pooled_activations(model: Any, ids: torch.Tensor, layer: int, *, batch_size: int = 8) -> np.ndarray:
    """Mean-pooled hidden states after decoder layer ``layer`` (0 = embeddings) for each row of ``ids``."""
    n_layers = int(model.config.num_hidden_layers)
    if not (isinstance(layer, int) and 0 <= layer <= n_layers):
        raise InputError(f"layer={layer!r} is outside 0..{n_layers}", f"pick a layer in 0..{n_layers}")
    feats = []
    for b in range(0, ids.shape[0], batch_size):
        x = ids[b:b + batch_size].to(next(model.parameters()).device)
        out = model(input_ids=x, output_hidden_states=True, use_cache=False)
        feats.append(out.hidden_states[layer].float().mean(dim=1).cpu())
    return torch.cat(feats).numpy().astype(np.float64)


def _standardise(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return (X - X.mean(0)) / (X.std(0) + 1e-8)


def coverage_radius(X: np.ndarray, selected: Sequence[int]) -> float:
    """Largest distance from any point of ``X`` to its nearest selected point (lower = better coverage)."""
    X = np.asarray(X, dtype=np.float64)
    nearest = np.full(len(X), np.inf)
    for s in X[list(selected)]:  # one selected point at a time: memory O(len(X))
        nearest = np.minimum(nearest, ((X - s) ** 2).sum(1))
    return float(np.sqrt(nearest.max()))


def kcenter_greedy(X: np.ndarray, n: int, seed: int = 0) -> list[int]:
    """Farthest-first traversal from a random start: a 2-approximation of the optimal k-center."""
    X = np.asarray(X, dtype=np.float64)
    _check_n(n, len(X))
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(X)))]
    dist = ((X - X[chosen[0]]) ** 2).sum(1)
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((X - X[nxt]) ** 2).sum(1))
    return chosen


def kmeans_medoids(X: np.ndarray, n: int, seed: int = 0) -> list[int]:
    """k-means with ``k = n`` (scikit-learn); the point nearest each centroid, distinct points only."""
    from sklearn.cluster import KMeans

    X = np.asarray(X, dtype=np.float64)
    _check_n(n, len(X))
    km = KMeans(n_clusters=n, n_init=4, random_state=seed).fit(X)
    chosen: list[int] = []
    for c in np.argsort(np.bincount(km.labels_, minlength=n))[::-1]:  # big clusters first
        d2 = ((X - km.cluster_centers_[c]) ** 2).sum(1)  # one centroid at a time: memory O(len(X))
        for i in np.argsort(d2):
            if int(i) not in chosen:
                chosen.append(int(i))
                break
    return chosen


class Selector:
    """Chooses ``n`` calibration samples from a pool; activation selectors need ``features`` (one row per candidate)."""

    name = "selector"
    needs_features = False

    def __init__(self, n: int, seed: int = 0):
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            raise InputError(f"budget n={n!r} must be a positive integer", "pass e.g. n=32")
        self.n, self.seed = n, int(seed)

    def select(self, pool: CandidatePool, features: np.ndarray | None = None) -> Selection:
        _check_n(self.n, len(pool))
        if self.needs_features:
            if features is None or len(features) != len(pool):
                raise InputError(f"{self.name} needs one feature row per candidate",
                                 "pass features=pooled_activations(model, pool.ids, layer)")
        idx = self._choose(pool, features)
        counts: dict[str, int] = {}
        for i in idx:
            counts[pool.domains[i]] = counts.get(pool.domains[i], 0) + 1
        radius = coverage_radius(_standardise(features), idx) if features is not None else math.nan
        return Selection(indices=idx, selector=self.name, coverage_radius=radius, domain_counts=counts)

    def _choose(self, pool, features):  # pragma: no cover
        raise NotImplementedError


class RandomSelector(Selector):
    name = "random"

    def _choose(self, pool, features):
        return [int(i) for i in np.random.default_rng(self.seed).choice(len(pool), self.n, replace=False)]


class DomainSelector(Selector):
    name = "domain"

    def __init__(self, n: int, domains: Sequence[str] | str, seed: int = 0):
        super().__init__(n, seed)
        if isinstance(domains, str):
            domains = [d.strip() for d in domains.split(",") if d.strip()]
        bad = [d for d in domains if d not in DOMAINS]
        if bad or not domains:
            raise InputError(f"unknown target domain(s) {bad or list(domains)}", f"use some of {', '.join(DOMAINS)}")
        self.domains = list(domains)
        self.name = "domain:" + "+".join(self.domains)

    def _choose(self, pool, features):
        rng = np.random.default_rng(self.seed)
        per = [self.n // len(self.domains) + (k < self.n % len(self.domains)) for k in range(len(self.domains))]
        chosen: list[int] = []
        for d, m in zip(self.domains, per):
            cand = pool.of_domain(d)
            if len(cand) < m:
                raise InputError(f"the pool has {len(cand)} '{d}' candidates, fewer than the {m} needed",
                                 "build the pool with this domain and enough per_domain")
            chosen += [int(cand[i]) for i in rng.choice(len(cand), m, replace=False)]
        return chosen


class KMeansSelector(Selector):
    name = "kmeans"
    needs_features = True

    def _choose(self, pool, features):
        return kmeans_medoids(_standardise(features), self.n, self.seed)


class KCenterSelector(Selector):
    name = "kcenter"
    needs_features = True

    def _choose(self, pool, features):
        return kcenter_greedy(_standardise(features), self.n, self.seed)


SELECTORS = ("random", "domain", "kmeans", "kcenter")


def make_selector(name: str, n: int, *, seed: int = 0, domains: Sequence[str] | str | None = None) -> Selector:
    """A selector by name: ``random``, ``domain`` (needs ``domains``), ``kmeans``, ``kcenter``."""
    key = str(name).lower()
    if key == "random":
        return RandomSelector(n, seed)
    if key == "domain":
        if not domains:
            raise InputError("the domain selector needs target domains", f"pass domains, some of {', '.join(DOMAINS)}")
        return DomainSelector(n, domains, seed)
    if key == "kmeans":
        return KMeansSelector(n, seed)
    if key == "kcenter":
        return KCenterSelector(n, seed)
    raise InputError(f"unknown selector '{name}'", f"use one of {', '.join(SELECTORS)}")
