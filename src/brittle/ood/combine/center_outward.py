"""Center-outward quantiles: the optimal-transport map from standardised ID score vectors to the spherical
uniform distribution, and the norm of its value as the OOD score (Hallin, del Barrio, Cuesta-Albertos & Matrán,
*Distribution and quantile functions, ranks and signs in dimension d*, Ann. Statist. 2021).

**Fit.** The ID validation vectors are standardised per column (mean 0, standard deviation 1; a subsample of
``max_fit`` rows, seeded, bounds the cost) and matched by exact discrete optimal transport (squared Euclidean
cost, `ot.emd` of POT) to a regular grid of the **spherical uniform** reference ``U_d`` — ``n_R`` radii
``(j − ½)/n_R`` times ``n_S`` directions (``d = 1``: ``±1``; ``d = 2``: equally spaced angles; ``d ≥ 3``:
normalised Gaussian Sobol points), ``n_R·n_S ≈ n``. The center-outward distribution function ``F±`` sends the
ID "center" (the componentwise-median-like region) to 0 and the ID outskirts to the unit sphere; the
**center-outward rank** ``‖F±(s)‖ ∈ [0, 1]`` is the OOD score, and the acceptance regions ``{‖F±‖ ≤ t}`` are the
nested center-outward quantile contours — ``t = τ`` holds a share ``τ`` of the ID mass.

**Out-of-sample extension.** The transport plan gives ``F±`` at the fitted ID points (its barycentric
projection, a grid point each when the plan is a permutation). Any other input gets the Nadaraya–Watson
interpolation of those values, ``F±(x) = Σ_i T_i softmax_i(−‖x − x_i‖² / ε)`` over the fitted standardised ID
points ``x_i`` — smooth, equal to ``T_i`` at ``x_i`` as ``ε → 0``, and inside the unit ball. ``epsilon = "auto"``
is the squared median nearest-neighbour distance between fitted points. (The semi-discrete Laguerre-cell map of
the exact transport's dual potentials would be the textbook extension, but network-simplex duals are
degenerate — several cells tie at fitted points — so it does not reproduce the fitted ranks.) Beyond the ID
cloud the rank saturates at the outer sphere, so the score adds the standardised norm's excess over the largest
ID norm, ``max(0, ‖x‖ − r_max)``: points farther out than every ID vector keep their order (this changes no
acceptance region at a level the ID data can calibrate).

**Two-sided by nature.** Center-outward ranks flag *both* tails: an input unusually ID-like on every detector
(e.g. an extremely confident digit) sits far from the center too. In one dimension the rank is ``|2F̂ − 1|``
(tested). This is the price of a distribution-free multivariate ordering; the vote and the CDFs are one-sided.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import qmc

from ...errors import InputError
from .base import Combiner, register_combiner


def spherical_uniform_grid(n: int, d: int, seed: int = 0) -> np.ndarray:
    """About ``n`` points of the spherical uniform reference in ``R^d``: ``n_R`` radii ``(j − ½)/n_R`` times
    ``n_S`` directions (exactly ``n`` points when ``d = 1`` and ``n`` is even)."""
    if d == 1:
        n_s = 2
        dirs = np.array([[-1.0], [1.0]])
    else:
        n_s = max(2, int(round(math.sqrt(n)))) if d == 2 else max(d + 1, int(round(math.sqrt(n))))
        if d == 2:
            ang = 2 * np.pi * (np.arange(n_s) + 0.5) / n_s
            dirs = np.column_stack([np.cos(ang), np.sin(ang)])
        else:
            from scipy.special import ndtri
            u = qmc.Halton(d, scramble=True, seed=seed).random(n_s)
            g = ndtri(np.clip(u, 1e-12, 1 - 1e-12))
            dirs = g / np.linalg.norm(g, axis=1, keepdims=True)
    n_r = max(1, n // n_s)
    radii = (np.arange(1, n_r + 1) - 0.5) / n_r
    return (radii[:, None, None] * dirs[None, :, :]).reshape(-1, d), n_r


@register_combiner
class CenterOutward(Combiner):
    name = "ot"

    def __init__(self, max_fit: int = 1000, epsilon: float | str = "auto", seed: int = 0):
        if not isinstance(max_fit, (int, np.integer)) or max_fit < 2:
            raise InputError(f"max_fit must be an integer >= 2, got {max_fit!r}", "pass e.g. max_fit=1000")
        if not (epsilon == "auto" or (isinstance(epsilon, (int, float)) and float(epsilon) > 0)):
            raise InputError(f"epsilon must be 'auto' or a positive number, got {epsilon!r}",
                             "pass epsilon='auto' or e.g. 0.01")
        self.max_fit, self.epsilon, self.seed = int(max_fit), epsilon, int(seed)

    def _fit(self, s: np.ndarray) -> None:
        try:
            import ot
        except ImportError:  # pragma: no cover - depends on the environment
            raise InputError("the center-outward strategy needs POT (Python Optimal Transport)",
                             "pip install 'brittle[ood]' (or pip install pot)") from None
        n, d = s.shape
        if n > self.max_fit:
            s = s[np.sort(np.random.default_rng(self.seed).choice(n, self.max_fit, replace=False))]
            n = len(s)
        self.mean_ = s.mean(axis=0)
        sd = s.std(axis=0)
        self.std_ = np.where(sd > 0, sd, 1.0)
        x = (s - self.mean_) / self.std_
        grid, n_r = spherical_uniform_grid(n, d, self.seed)
        cost = ot.dist(x, grid)                                   # squared Euclidean
        a, b = np.full(n, 1.0 / n), np.full(len(grid), 1.0 / len(grid))
        plan, log = ot.emd(a, b, cost, numItermax=10_000_000, log=True)
        if log.get("warning"):
            raise InputError(f"optimal transport did not converge ({log['warning']})",
                             "pass a smaller max_fit or check the scores for duplicates")
        self.points_ = x
        self.fitted_map_ = (plan @ grid) * n                      # barycentric projection of each fitted row
        if self.epsilon == "auto":
            sq = ot.dist(x, x)
            np.fill_diagonal(sq, np.inf)
            nn = float(np.median(sq.min(axis=1)))
            self.eps_ = nn if nn > 0 else 1e-6
        else:
            self.eps_ = float(self.epsilon)
        self.r_max_ = float(np.linalg.norm(x, axis=1).max())

    def transform(self, scores: Any) -> np.ndarray:
        """``F±(s)``: the center-outward distribution function, a point of the unit ball per row."""
        self.check_fitted()
        from .base import check_score_matrix
        return self._map(check_score_matrix(scores, "scores", d=self.d_))

    def _map(self, s: np.ndarray) -> np.ndarray:
        x = (s - self.mean_) / self.std_
        out = np.empty_like(x)
        p, p2 = self.points_, (self.points_ ** 2).sum(axis=1)
        for a in range(0, len(x), 2048):
            xc = x[a:a + 2048]
            logits = ((2 * xc) @ p.T - p2[None, :]) / self.eps_         # −‖x − x_i‖²/ε up to a per-row constant
            logits -= logits.max(axis=1, keepdims=True)
            w = np.exp(logits)
            out[a:a + 2048] = (w @ self.fitted_map_) / w.sum(axis=1, keepdims=True)
        return out

    def _score(self, s: np.ndarray) -> np.ndarray:
        rank = np.linalg.norm(self._map(s), axis=1)
        excess = np.maximum(0.0, np.linalg.norm((s - self.mean_) / self.std_, axis=1) - self.r_max_)
        return rank + excess

    def get_params(self) -> dict[str, Any]:
        return {"max_fit": self.max_fit, "epsilon": self.epsilon, "seed": self.seed}

    def _get_state(self) -> dict[str, Any]:
        return {"mean": self.mean_.tolist(), "std": self.std_.tolist(), "points": self.points_.tolist(),
                "fitted_map": self.fitted_map_.tolist(), "eps": self.eps_, "r_max": self.r_max_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.mean_ = np.asarray(state["mean"], dtype=np.float64)
        self.std_ = np.asarray(state["std"], dtype=np.float64)
        self.points_ = np.asarray(state["points"], dtype=np.float64).reshape(-1, self.d_)
        self.fitted_map_ = np.asarray(state["fitted_map"], dtype=np.float64).reshape(-1, self.d_)
        self.eps_ = float(state["eps"])
        self.r_max_ = float(state["r_max"])
