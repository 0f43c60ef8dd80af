"""Predictive entropy of the softmax.

Used as an OOD score since Hendrycks & Gimpel (ICLR 2017); see also Chan, Rottmann, Gottschalk,
*Entropy Maximization and Meta Classification for Out-of-Distribution Detection*, ICCV 2021.

    p = softmax(z),   score(x) = H(p) = − Σ_k p_k log p_k           (higher = more OOD)

Terms with ``p_k = 0`` contribute 0 (``xlogy``). Reads only the logits; no fitting. ``H ∈ [0, log C]``.
"""

from __future__ import annotations

import torch

from ..scores.base import register
from ._base import OODDetector


@register
class Entropy(OODDetector):
    """``H(softmax(z))``."""

    name = "entropy"
    paper = "Hendrycks & Gimpel, ICLR 2017"

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logp = torch.log_softmax(logits.double(), dim=1)
        return -(logp.exp() * logp).sum(dim=1)
