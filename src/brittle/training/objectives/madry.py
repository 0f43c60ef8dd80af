"""Madry et al. (2018) adversarial training: cross-entropy on adversarial examples."""

from __future__ import annotations

import torch
from torch import nn

from .base import BatchContext, Objective


class MadryObjective(Objective):
    """Cross-entropy on the adversarial examples of the training attack at the scheduled ε (on the clean batch
    while the schedule is at 0)."""

    name = "madry"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: BatchContext) -> torch.Tensor:
        x_adv = self.perturb(model, x, y, context)
        if x_adv is None:
            logits = model(x)
            context.clean_logits = logits.detach()
        else:
            logits = model(x_adv)
            context.adv_logits = logits.detach()
        return self.cross_entropy(logits, y)
