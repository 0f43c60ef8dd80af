"""GEN: generalized entropy of the softmax.

Liu, Lochman, Zach, *GEN: Pushing the Limits of Softmax-Based Out-of-Distribution Detection*, CVPR 2023.

    p = softmax(z) sorted decreasingly,   score(x) = G_γ(p) = Σ_{j=1..M} p_j^γ (1 − p_j)^γ   (higher = more OOD)

The paper's defaults: ``γ = 0.1`` and ``M = 100`` (the M largest probabilities; all of them when C ≤ M). The
paper reports ``−G_γ`` as an ID score; brittle keeps ``G_γ`` so that higher = more OOD. No fitting.
"""

from __future__ import annotations

from typing import Any

import torch

from ..scores.base import register
from ._base import OODDetector, check_positive


@register
class GEN(OODDetector):
    """``Σ_top-M p^γ (1−p)^γ``."""

    name = "gen"
    paper = "Liu et al., CVPR 2023"

    def __init__(self, gamma: float = 0.1, m: int = 100) -> None:
        super().__init__()
        self.gamma = check_positive(gamma, "gamma")
        self.m = check_positive(m, "m", integer=True)

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        p = torch.softmax(logits.double(), dim=1)
        top = p.topk(min(self.m, p.shape[1]), dim=1).values
        return (top.pow(self.gamma) * (1 - top).clamp_min(0).pow(self.gamma)).sum(dim=1)

    def _params(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "m": self.m}
