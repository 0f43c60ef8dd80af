"""Maximum logit (MaxLogit / MLS).

Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt, Song, *Scaling Out-of-Distribution Detection
for Real-World Settings*, ICML 2022 (arXiv 1911.11132).

    score(x) = − max_k z_k(x)                    (higher = more OOD)

Reads only the logits; no fitting. It is the ``T → 0`` limit of the energy score (`Energy`).
"""

from __future__ import annotations

import torch

from ..scores.base import register
from ._base import OODDetector


@register
class MaxLogit(OODDetector):
    """``−max z``."""

    name = "max_logit"
    paper = "Hendrycks et al., ICML 2022"

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return -logits.double().max(dim=1).values
