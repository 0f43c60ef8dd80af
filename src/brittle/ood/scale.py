"""SCALE: rescale activations by the share of their sum held by the top activations.

Xu, Chen, Franchi, Yao, *Scaling for Training Time and Post-hoc Out-of-distribution Detection Enhancement*,
ICLR 2024 (arXiv 2310.00227).

Per input, with ``s₁ = Σ h`` and ``s₂`` the sum of the ``k = n − round(n·p/100)`` largest activations
(``p`` = ``percentile``, default 85, the paper's ImageNet setting):

    h' = h · exp(s₁ / s₂)        (nothing is pruned, unlike ASH-S)

then the wrapped logit detector (energy by default) scores ``z' = W h' + b``. No statistics are fitted.
"""

from __future__ import annotations

from typing import Any

import torch

from ..scores.base import register
from ._base import check_percentile
from ._modifier import ActivationModifier, top_k_mask


@register
class SCALE(ActivationModifier):
    """Scale all activations by ``exp(total / top-k sum)``, then a logit detector."""

    name = "scale"
    paper = "Xu et al., ICLR 2024"

    def __init__(self, percentile: float = 85.0, detector: Any = "energy", layer: str | None = None,
                 head: str | None = None) -> None:
        super().__init__(detector, layer, head)
        self.percentile = check_percentile(percentile)

    def modify(self, h: torch.Tensor) -> torch.Tensor:
        mask, _ = top_k_mask(h, self.percentile)
        s1 = h.sum(1, keepdim=True)
        s2 = torch.where(mask, h, torch.zeros_like(h)).sum(1, keepdim=True)
        ratio = torch.where(s2 != 0, s1 / torch.where(s2 != 0, s2, torch.ones_like(s2)), torch.ones_like(s2))
        return h * torch.exp(ratio)

    def _params(self) -> dict[str, Any]:
        return {"percentile": self.percentile}
