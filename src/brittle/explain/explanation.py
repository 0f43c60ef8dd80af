"""The result of an explainer: attributions with the numbers needed to read and check them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Explanation:
    """Attributions of ``n`` rows to ``G`` players (features or feature groups).

    ``values[i, g]`` is the interventional Shapley value of player g for row i, averaged over the background;
    ``base_value + values[i].sum() == prediction[i]`` (efficiency) up to float rounding. With
    ``per_tree=True`` values have shape ``(n, T, G)``: the contribution of each tree (summing over trees gives
    the ensemble's values). ``interactions`` (when computed) is ``(n, G, G)``: Shapley–Taylor main effects
    ``v({g}) - v(∅)`` on the diagonal and half of each order-2 Shapley–Taylor index ``φ_gh`` on both
    ``[g, h]`` and ``[h, g]``, so that every matrix sums to ``prediction - base_value``; the index itself is
    ``2 * interactions[i, g, h]`` (see :meth:`pair_index`).
    """

    values: np.ndarray
    base_value: float
    feature_names: list[str]
    prediction: np.ndarray
    output: str = ""
    data: np.ndarray | None = None
    interactions: np.ndarray | None = None
    groups: list[list[int]] | None = None
    #: the explained rows' labels when they came as a DataFrame (its index), else None (rows 0..n-1)
    index: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def pair_index(self) -> np.ndarray:
        """``(n, G, G)`` order-2 Shapley–Taylor indices φ_gh off the diagonal, main effects on it."""
        if self.interactions is None:
            from ..errors import InputError

            raise InputError("this explanation has no interactions", "use explainer.explain_interactions(X)")
        out = 2.0 * self.interactions
        idx = np.arange(out.shape[-1])
        out[:, idx, idx] = self.interactions[:, idx, idx]
        return out

    def efficiency_error(self) -> float:
        """Largest ``|base_value + Σ values - prediction|`` over rows (0 up to float rounding)."""
        vals = self.values.sum(axis=tuple(range(1, self.values.ndim)))
        return float(np.max(np.abs(self.base_value + vals - self.prediction), initial=0.0))

    def importance(self) -> np.ndarray:
        """Global importance: mean absolute value per player (over rows, and trees summed first)."""
        vals = self.values.sum(axis=1) if self.values.ndim == 3 else self.values
        return np.abs(vals).mean(axis=0)

    def to_frame(self):
        """pandas DataFrame: one row per explained row (indexed as the explained DataFrame was, so it joins back
        to it), one column per player, then the base value and the
        prediction as the last two columns, named ``base_value`` and ``prediction`` unless a player has that name
        (then the first free one of ``base_value_``, ``base_value__``, …; see :func:`free_name`)."""
        import pandas as pd

        vals = self.values.sum(axis=1) if self.values.ndim == 3 else self.values
        df = pd.DataFrame(vals, columns=list(self.feature_names), index=self.index)  # the input table's row labels
        df[free_name("base_value", df.columns)] = self.base_value
        df[free_name("prediction", df.columns)] = self.prediction
        return df


def free_name(name: str, taken) -> str:
    """The first of ``name``, ``name_``, ``name__``, … that is not in ``taken`` (a column added next to features)."""
    taken = set(map(str, taken))
    while name in taken:
        name += "_"
    return name
