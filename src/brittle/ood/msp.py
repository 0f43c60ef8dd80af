"""Maximum softmax probability (MSP), the baseline OOD detector.

Hendrycks & Gimpel, *A Baseline for Detecting Misclassified and Out-of-Distribution Examples in Neural
Networks*, ICLR 2017 (arXiv 1610.02136).

    score(x) = − max_k softmax(z(x))_k          (higher = more OOD)

Reads only the logits ``z``; no fitting. Equal to pytorch-ood's ``MaxSoftmax`` and oodeel's ``MLS``
(``output_activation="softmax"``) up to the sign convention.
"""

from __future__ import annotations

import torch

from ..scores.base import register
from ._base import OODDetector


@register
class MSP(OODDetector):
    """``−max softmax(z)``."""

    name = "msp"
    paper = "Hendrycks & Gimpel, ICLR 2017"

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return -torch.softmax(logits.double(), dim=1).max(dim=1).values
