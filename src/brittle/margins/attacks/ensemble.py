"""Ensemble: run several minimal-norm attacks and keep, per sample, the smallest verified bound."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...data.loading import Domain
from ...errors import InputError
from .base import AttackResult, MinimalNormAttack, counted_prediction, keep_best


class Ensemble(MinimalNormAttack):
    """Runs ``attacks`` in order on the same batch; every member's candidates are verified by the member.

    The result holds, per sample, the member result with the smallest verified norm, and the summed cost.
    """

    name = "ensemble"

    def __init__(self, attacks: Sequence[MinimalNormAttack], norm: str = "linf", *, seed: int = 0):
        super().__init__(norm, seed=seed)
        if not attacks:
            raise InputError("the ensemble has no attacks", "pass at least one attack")
        for attack in attacks:
            if not isinstance(attack, MinimalNormAttack):
                raise InputError(f"ensemble member {attack!r} is not a MinimalNormAttack",
                                 "pass attack objects, e.g. FastBoundaryAttack(norm)")
            if attack.norm != self.norm:
                raise InputError(f"ensemble member {attack.name!r} attacks {attack.norm}, the ensemble {self.norm}",
                                 "build every member with the ensemble's norm")
        self.attacks = list(attacks)

    @property
    def members(self) -> list[str]:
        return [a.name for a in self.attacks]

    def _perturb(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor, domain: Domain) -> torch.Tensor:
        return self(model, x, pred, domain).x_adv

    def __call__(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor | None = None,
                 domain: Domain = (0.0, 1.0)) -> AttackResult:
        counting, pred = counted_prediction(model, x, pred)
        best: AttackResult | None = None
        for attack in self.attacks:
            result = attack(model, x, pred, domain)
            best = result if best is None else keep_best(best, result)
        assert best is not None
        best.cost.forward += counting.cost.forward
        return best
