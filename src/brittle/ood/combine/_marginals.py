"""Empirical marginals of each detector's ID scores, as normal scores ``z = Φ⁻¹(F̂(s))`` with smooth tails.

Shared by the majority vote (per-detector thresholds are marginal quantiles) and the Gaussian copula (whose
margins are these). Inside the ID range ``F̂`` interpolates linearly between the distinct sorted ID values at
their mid-rank plotting positions ``(i − ½)/n`` (tied values share the mean position); beyond the smallest or
largest ID value the normal score continues linearly with slope ``1/σ`` (σ = IQR/1.349 of the column, a robust
standard deviation), i.e. a Gaussian tail. So ``z`` is strictly increasing in the score everywhere and inputs
far beyond every ID value are not tied at ``F̂ = 1`` — they keep their order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import ndtri


class EmpiricalMarginals:
    """Per-column normal scores of a fitted ``(n, d)`` ID score matrix."""

    def fit(self, s: np.ndarray) -> "EmpiricalMarginals":
        n, d = s.shape
        self.knots_: list[np.ndarray] = []
        self.z_: list[np.ndarray] = []
        self.scale_ = np.empty(d)
        pos = (np.arange(1, n + 1) - 0.5) / n
        for k in range(d):
            col = np.sort(s[:, k])
            values, first, counts = np.unique(col, return_index=True, return_counts=True)
            mid = np.add.reduceat(pos, first) / counts     # mean plotting position of each distinct value
            self.knots_.append(values)
            self.z_.append(ndtri(mid))
            q75, q25 = np.quantile(col, [0.75, 0.25])
            scale = (q75 - q25) / 1.349
            if not scale > 0:
                scale = float(np.std(col)) or (float(np.abs(col).max()) or 1.0)
            self.scale_[k] = scale
        return self

    def transform(self, s: np.ndarray) -> np.ndarray:
        """Normal scores ``(m, d)`` of raw oriented scores ``(m, d)``."""
        z = np.empty_like(s, dtype=np.float64)
        for k in range(s.shape[1]):
            x, kn, zk, sc = s[:, k], self.knots_[k], self.z_[k], self.scale_[k]
            if len(kn) == 1:  # a constant column: its one value sits at z = 0, slope 1/σ on both sides
                z[:, k] = zk[0] + (x - kn[0]) / sc
                continue
            out = np.interp(x, kn, zk)
            lo, hi = x < kn[0], x > kn[-1]
            out[lo] = zk[0] + (x[lo] - kn[0]) / sc
            out[hi] = zk[-1] + (x[hi] - kn[-1]) / sc
            z[:, k] = out
        return z

    def inverse(self, z: np.ndarray | float, k: int) -> np.ndarray:
        """Raw score of column ``k`` whose normal score is ``z`` (the inverse of `transform`)."""
        z = np.atleast_1d(np.asarray(z, dtype=np.float64))
        kn, zk, sc = self.knots_[k], self.z_[k], self.scale_[k]
        if len(kn) == 1:
            return kn[0] + (z - zk[0]) * sc
        out = np.interp(z, zk, kn)
        lo, hi = z < zk[0], z > zk[-1]
        out[lo] = kn[0] + (z[lo] - zk[0]) * sc
        out[hi] = kn[-1] + (z[hi] - zk[-1]) * sc
        return out

    def get_state(self) -> dict[str, Any]:
        return {"knots": [k.tolist() for k in self.knots_], "z": [z.tolist() for z in self.z_],
                "scale": self.scale_.tolist()}

    def set_state(self, state: dict[str, Any]) -> "EmpiricalMarginals":
        self.knots_ = [np.asarray(k, dtype=np.float64) for k in state["knots"]]
        self.z_ = [np.asarray(z, dtype=np.float64) for z in state["z"]]
        self.scale_ = np.asarray(state["scale"], dtype=np.float64)
        return self
