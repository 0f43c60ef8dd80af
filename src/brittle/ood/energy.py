"""Energy score with a temperature.

Liu, Wang, Owens, Li, *Energy-based Out-of-distribution Detection*, NeurIPS 2020 (arXiv 2010.03759).

    score(x) = E(x; T) = − T · log Σ_k exp(z_k(x) / T)        (higher = more OOD)

``T = 1`` is the paper's choice. As ``T → 0`` the energy tends to ``−max_k z_k`` (MaxLogit); the log-sum-exp
is computed stably in float64. Reads only the logits; no fitting.
"""

from __future__ import annotations

from typing import Any

import torch

from ..scores.base import register
from ._base import OODDetector, check_positive


@register
class Energy(OODDetector):
    """``−T·logsumexp(z/T)``."""

    name = "energy"
    paper = "Liu et al., NeurIPS 2020"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        t = self.temperature
        return -t * torch.logsumexp(logits.double() / t, dim=1)

    def _params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}
