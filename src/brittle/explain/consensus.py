"""Consensus partial orders of feature importance across K attribution vectors.

Following Laberge, Pequignot, Mathieu, Khomh & Marchand ("Partial Order in Chaos", arXiv 2110.13369): given the
attributions ``A[k, g]`` of G players by K models (seeds, bootstraps, the tree averages of a random forest's
Rashomon set) or K explainers, player g is *more important* than h when **every** model says so,
``|A[k, g]| > |A[k, h]| + tol`` for all k. A player whose attribution is positive for one model and negative for
another is *ambiguous* (some mixture of the models gives it no effect at all), so it is never placed above
another player. The relation is a strict partial order (irreflexive, antisymmetric, transitive); with K = 1
it is the total order of ``|A|`` up to ties, and adding a model never adds a relation.

The *mean order* ranks players by ``|mean_k A[k, g]|`` — the attribution of the averaged model, a total order
the models need not agree on. ``support`` is the share of the mean order's pairs that the consensus holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass
class PartialOrder:
    """A strict partial order over players: ``relation[g, h]`` is True when g is more important than h."""

    feature_names: list[str]
    relation: np.ndarray          # (G, G) bool
    ambiguous: np.ndarray         # (G,) bool
    mean_attribution: np.ndarray  # (G,) mean over models (signed)
    n_models: int

    @property
    def cardinality(self) -> int:
        """Number of ordered pairs (g more important than h) the consensus holds."""
        return int(self.relation.sum())

    def mean_order_pairs(self) -> np.ndarray:
        """(G, G) bool: g above h in the total order of ``|mean attribution|`` (ties give no pair)."""
        a = np.abs(self.mean_attribution)
        return a[:, None] > a[None, :]

    @property
    def support(self) -> float:
        """Share of the mean order's pairs that the consensus supports (1.0 when the mean order has none)."""
        mean = self.mean_order_pairs()
        total = int(mean.sum())
        return 1.0 if total == 0 else float((mean & self.relation).sum() / total)

    def hasse_edges(self) -> list[tuple[int, int]]:
        """Edges of the Hasse diagram (transitive reduction): g → h with nothing strictly between."""
        R = self.relation
        between = (R.astype(np.int64) @ R.astype(np.int64)) > 0
        return [(int(g), int(h)) for g, h in np.argwhere(R & ~between)]

    def levels(self) -> np.ndarray:
        """Layer of each player: 0 for players nothing dominates, else 1 + the deepest dominating player."""
        G = len(self.feature_names)
        level = np.zeros(G, dtype=np.int64)
        for _ in range(G):
            new = np.array([max((level[g] + 1 for g in np.flatnonzero(self.relation[:, h])), default=0)
                            for h in range(G)])
            if np.array_equal(new, level):
                break
            level = new
        return level

    def summary(self) -> dict:
        return {"n_models": self.n_models, "n_features": len(self.feature_names), "cardinality": self.cardinality,
                "mean_order_pairs": int(self.mean_order_pairs().sum()), "support": self.support,
                "ambiguous": [n for n, a in zip(self.feature_names, self.ambiguous) if a],
                "hasse_edges": [[self.feature_names[g], self.feature_names[h]] for g, h in self.hasse_edges()]}

    def to_svg(self, **kw) -> str:
        from .hasse import hasse_svg

        return hasse_svg(self, **kw)


def consensus_order(attributions, feature_names=None, tol: float = 0.0) -> PartialOrder:
    """The consensus partial order of a ``(K, G)`` array of attributions (one row per model or explainer)."""
    try:
        A = np.asarray(attributions, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("attributions are not numeric", "pass a (models, features) array of numbers") from None
    if A.ndim == 1:
        A = A[None, :]
    if A.ndim != 2 or A.shape[0] < 1 or A.shape[1] < 1:
        raise InputError(f"attributions have shape {A.shape}, not (models, features)",
                         "pass one row of attributions per model")
    if not np.isfinite(A).all():
        raise InputError("attributions contain NaN or infinite values", "pass finite attributions")
    if not (np.isfinite(tol) and tol >= 0):
        raise InputError(f"tol={tol} is not a non-negative number", "pass tol >= 0")
    K, G = A.shape
    names = [str(n) for n in feature_names] if feature_names is not None else [f"x{j}" for j in range(G)]
    if len(names) != G:
        raise InputError(f"{len(names)} feature names for {G} attribution columns", "pass one name per column")
    if len(set(names)) != G:
        raise InputError("feature names repeat", "pass distinct feature names")
    ambiguous = (A > 0).any(axis=0) & (A < 0).any(axis=0)
    mag = np.abs(A)
    relation = np.all(mag[:, :, None] > mag[:, None, :] + tol, axis=0)
    relation &= ~ambiguous[:, None]
    np.fill_diagonal(relation, False)
    return PartialOrder(feature_names=names, relation=relation, ambiguous=ambiguous,
                        mean_attribution=A.mean(axis=0), n_models=K)
