"""Standard training: cross-entropy on the clean batch."""

from __future__ import annotations

import torch
from torch import nn

from .base import BatchContext, Objective


class StandardObjective(Objective):
    """Cross-entropy (with label smoothing) on the clean inputs; no adversarial examples."""

    name = "standard"
    adversarial = False

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: BatchContext) -> torch.Tensor:
        logits = model(x)
        context.clean_logits = logits.detach()
        return self.cross_entropy(logits, y)
