"""ReAct: rectified activations.

Sun, Guo, Li, *ReAct: Out-of-distribution Detection With Rectified Activations*, NeurIPS 2021
(arXiv 2111.12797).

Fit: ``c`` = the ``percentile``-th percentile (default 90, the paper's) of all penultimate activations of
the ID fit inputs (flattened over inputs and units). Score: the wrapped logit detector (energy by default) on

    z' = W · min(h, c) + b

See `brittle.ood._modifier` for the layer/head rules and the detectors it can wrap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..scores.base import register
from ._base import check_percentile
from ._modifier import ActivationModifier


@register
class ReAct(ActivationModifier):
    """Clip penultimate activations at their ID ``percentile``, then a logit detector."""

    name = "react"
    paper = "Sun et al., NeurIPS 2021"

    def __init__(self, percentile: float = 90.0, detector: Any = "energy", layer: str | None = None,
                 head: str | None = None) -> None:
        super().__init__(detector, layer, head)
        self.percentile = check_percentile(percentile)
        self.threshold_: float | None = None

    def _fit_modifier(self, h: np.ndarray) -> None:
        self.threshold_ = float(np.percentile(h.ravel(), self.percentile))

    def modify(self, h: torch.Tensor) -> torch.Tensor:
        return h.clamp(max=self.threshold_)

    def _params(self) -> dict[str, Any]:
        return {"percentile": self.percentile}

    def _state(self) -> dict[str, Any]:
        return {"threshold": self.threshold_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.threshold_ = float(state["threshold"])
