"""TRADES (Zhang et al. 2019): clean cross-entropy plus β · KL(clean ‖ adversarial)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from .base import BatchContext, Objective, eval_mode, finite_at_least


def kl_to(p_clean: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-sample KL(p_clean ‖ softmax(logits)), the TRADES inner objective (an attack loss)."""

    def loss(logits: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits, 1), p_clean, reduction="none").sum(1)

    return loss


class TradesObjective(Objective):
    """CE(clean) + ``trades_beta`` · KL(softmax(clean) ‖ softmax(adversarial)), the inner attack maximising the KL
    term from the eval-mode clean prediction. ``trades_beta = 0`` is standard training."""

    name = "trades"
    options = ("trades_beta",)

    def __init__(self, *, trades_beta: float = 6.0, **settings: object):
        super().__init__(**settings)  # type: ignore[arg-type]
        if not finite_at_least(trades_beta, 0.0):
            raise InputError(f"trades_beta must be >= 0, got {trades_beta}", "use e.g. 6.0")
        if self.attack == "apgd-t" and trades_beta > 0:
            raise InputError("TRADES needs an inner attack that maximises its KL term; apgd-t has its own targeted "
                             "loss", "use attack='pgd' or 'apgd-ce' (--attack pgd) with TRADES")
        self.trades_beta = trades_beta

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: BatchContext) -> torch.Tensor:
        x_adv = None
        if context.eps > 0:
            with eval_mode(model), torch.no_grad():
                p_clean = F.softmax(model(x), 1)
            x_adv = self.perturb(model, x, y, context, loss=kl_to(p_clean))
        logits = model(x)
        loss = self.cross_entropy(logits, y)
        if x_adv is not None:
            adv_logits = model(x_adv)
            loss = loss + self.trades_beta * F.kl_div(F.log_softmax(adv_logits, 1), F.softmax(logits, 1),
                                                      reduction="batchmean")
            context.adv_logits = adv_logits.detach()
        context.clean_logits = logits.detach()
        return loss

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "trades_beta": self.trades_beta}
