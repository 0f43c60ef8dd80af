"""ASH: activation shaping (pruning the low activations of each input, then rescaling).

Djurisic, Bozanic, Ashok, Liu, *Extremely Simple Activation Shaping for Out-of-Distribution Detection*,
ICLR 2023 (arXiv 2209.09858).

Per input, keep the ``k = n − round(n·p/100)`` largest of the ``n`` penultimate activations (``p`` =
``percentile``, default 90) and set the others to 0; then, with ``s₁ = Σ h`` before and ``s₂`` after pruning:

* ``variant="s"`` (ASH-S, default): ``h' = pruned · exp(s₁ / s₂)``
* ``variant="p"`` (ASH-P): ``h' = pruned``
* ``variant="b"`` (ASH-B): the kept entries are set to ``s₁ / k``, the rest 0

and the wrapped logit detector (energy by default) scores ``z' = W h' + b``. The paper shapes the
convolutional feature map before global pooling; brittle shapes the penultimate vector (for the zoo CNN, the
100 ReLU units that feed the head). No statistics are fitted (fitting validates the head and fits the
wrapped detector).
"""

from __future__ import annotations

from typing import Any

import torch

from ..scores.base import register
from ._base import check_choice, check_percentile
from ._modifier import ActivationModifier, top_k_mask


@register
class ASH(ActivationModifier):
    """Prune all but the top activations of each input (and rescale), then a logit detector."""

    name = "ash"
    paper = "Djurisic et al., ICLR 2023"

    def __init__(self, percentile: float = 90.0, variant: str = "s", detector: Any = "energy",
                 layer: str | None = None, head: str | None = None) -> None:
        super().__init__(detector, layer, head)
        self.percentile = check_percentile(percentile)
        self.variant = check_choice(variant, "variant", ("s", "p", "b"))

    def modify(self, h: torch.Tensor) -> torch.Tensor:
        mask, k = top_k_mask(h, self.percentile)
        s1 = h.sum(1, keepdim=True)
        pruned = torch.where(mask, h, torch.zeros_like(h))
        if self.variant == "p":
            return pruned
        if self.variant == "b":
            return torch.where(mask, (s1 / k).expand_as(h), torch.zeros_like(h))
        s2 = pruned.sum(1, keepdim=True)
        ratio = torch.where(s2 != 0, s1 / torch.where(s2 != 0, s2, torch.ones_like(s2)), torch.ones_like(s2))
        return pruned * torch.exp(ratio)

    def _params(self) -> dict[str, Any]:
        return {"percentile": self.percentile, "variant": self.variant}
