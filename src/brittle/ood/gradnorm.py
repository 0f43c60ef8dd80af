"""GradNorm: the norm of the gradient of a KL divergence to the uniform distribution.

Huang, Geng, Li, *On the Importance of Gradients for Detecting Distributional Shifts in the Wild*,
NeurIPS 2021 (arXiv 2110.00218).

The paper back-propagates ``L = KL(u ‖ softmax(z/T))`` (``u`` uniform; in code: ``Σ_k −u_k log softmax(z/T)_k``)
and scores by the L1 norm of ``∂L/∂W`` for the final linear layer's weight ``W``. Since ``z = W h + b``,
``∂L/∂W = (softmax(z/T) − u) hᵀ / T``, an outer product, so its L1 norm factorises exactly:

    GradNorm(x) = ‖softmax(z/T) − u‖₁ · ‖h‖₁ / T,     score(x) = − GradNorm(x)      (higher = more OOD)

brittle computes this closed form from the penultimate features ``h`` and the logits of the one forward pass
(no backward pass, so ``needs_model`` is False and GradNorm shares the feature cache); the tests check it
against autograd on the model. ``T = 1`` as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch

from ..scores.base import register
from ._base import OODDetector, check_positive


@register
class GradNorm(OODDetector):
    """``−‖softmax(z/T) − u‖₁ ‖h‖₁ / T`` (the last-layer weight gradient's L1 norm, negated)."""

    name = "gradnorm"
    uses_layer = True
    paper = "Huang et al., NeurIPS 2021"

    def __init__(self, temperature: float = 1.0, layer: str | None = None) -> None:
        super().__init__(layer)
        self.temperature = check_positive(temperature, "temperature")

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        h = outputs[self._require_layer()].double()
        p = torch.softmax(logits.double() / self.temperature, dim=1)
        return -(p - 1.0 / p.shape[1]).abs().sum(1) * h.abs().sum(1) / self.temperature

    def _params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}
