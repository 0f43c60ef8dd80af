"""Shared base of minimal-norm attacks: norms, cost counting, and verification of every adversarial example.

An attack proposes candidates; `verify` keeps a candidate only if it lies in the input domain and really
changes the model's predicted class, and its input margin upper bound is the candidate's perturbation norm.
Nothing found means ``inf``, never 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn

from ...data.loading import Domain
from ...core.randomness import seeded
from ...core.validation import NORMS, check_norm
from ...errors import InputError

def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample L∞ or L2 norm of a batch of perturbations."""
    flat = delta.reshape(len(delta), -1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)


@dataclass
class Cost:
    """Passes spent, counted per sample: a batch of 100 forwarded once counts 100 forward passes."""

    forward: int = 0
    backward: int = 0

    def __iadd__(self, other: "Cost") -> "Cost":
        self.forward += other.forward
        self.backward += other.backward
        return self


class CountingModel(nn.Module):
    """Wraps a model and counts per-sample forward passes; backward passes are counted by `backward_count`."""

    def __init__(self, model: nn.Module, cost: Cost | None = None):
        super().__init__()
        self.model = model
        self.cost = cost if cost is not None else Cost()
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cost.forward += len(x)
        out = self.model(x)
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def _count_backward(self, grad: torch.Tensor) -> None:
        self.cost.backward += len(grad)


@dataclass
class AttackResult:
    """Verified outcome of an attack on a batch: ``upper`` is ``inf`` where no adversarial example was found."""

    upper: torch.Tensor
    x_adv: torch.Tensor
    adv_class: torch.Tensor
    cost: Cost = field(default_factory=Cost)

    @property
    def found(self) -> torch.Tensor:
        return torch.isfinite(self.upper)


#: Logit gap, in units of the logits' float resolution (machine epsilon times the largest |logit|), by which
#: another class must beat the predicted one for a candidate to count as flipped. An exact tie could be undone
#: by evaluating the same input in another batch (another BLAS path), so it is not reported as adversarial.
FLIP_ULPS = 4.0


def is_flipped(logits: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Per row of ``logits``, whether a class other than ``pred`` wins by more than float rounding."""
    top = logits.argmax(1)
    gap = logits.gather(1, top.unsqueeze(1))[:, 0] - logits.gather(1, pred.unsqueeze(1))[:, 0]
    resolution = torch.finfo(logits.dtype).eps * logits.detach().abs().amax(1)
    return (top != pred) & (gap > FLIP_ULPS * resolution)


@torch.no_grad()
def verify(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, pred: torch.Tensor, norm: str,
           domain: Domain) -> AttackResult:
    """Check candidates: inside the domain, and the model's prediction differs from ``pred``.

    Returns the verified norms (``inf`` where the candidate does not flip the prediction), the
    candidates (the clean input where not verified) and their predicted class (-1 where not verified).
    """
    x_adv = x_adv.detach().to(x.dtype).clamp(domain[0], domain[1])
    bad = ~torch.isfinite(x_adv.reshape(len(x), -1)).all(1)
    x_adv[bad] = x[bad]
    logits = model(x_adv)
    adv_pred = logits.argmax(1)
    flipped = is_flipped(logits, pred) & ~bad
    dist = perturbation_norm(x_adv - x, norm)
    # a flipping perturbation so small that its float32 L2 norm underflows (a sample at an exact tie): its norm
    # in float64, and never 0 (an upper bound of 0 would claim the clean input itself is adversarial)
    tiny = flipped & (dist == 0)
    dist = torch.where(tiny, perturbation_norm((x_adv - x).double(), norm).to(dist.dtype)
                       .clamp_min(torch.finfo(dist.dtype).tiny), dist)
    upper = torch.where(flipped, dist, torch.full_like(dist, float("inf")))
    x_out = torch.where(flipped.view(-1, *([1] * (x.ndim - 1))), x_adv, x)
    return AttackResult(upper, x_out, torch.where(flipped, adv_pred, torch.full_like(adv_pred, -1)))


def keep_best(best: AttackResult, new: AttackResult) -> AttackResult:
    """Per sample, the verified result with the smaller norm (costs added)."""
    better = new.upper < best.upper
    shape = (-1, *([1] * (best.x_adv.ndim - 1)))
    cost = Cost(best.cost.forward + new.cost.forward, best.cost.backward + new.cost.backward)
    return AttackResult(torch.where(better, new.upper, best.upper),
                        torch.where(better.view(shape), new.x_adv, best.x_adv),
                        torch.where(better, new.adv_class, best.adv_class), cost)


def counted_prediction(model: nn.Module, x: torch.Tensor,
                       pred: torch.Tensor | None) -> tuple[CountingModel, torch.Tensor]:
    """The model wrapped to count its passes, and the predictions to attack (computed when not given)."""
    counting = CountingModel(model)
    if pred is None:
        with torch.no_grad():
            pred = counting(x).argmax(1)
    return counting, pred


class MinimalNormAttack(ABC):
    """Base of minimal-norm attacks (one file per attack subclasses this).

    Subclasses implement `_perturb`, which proposes adversarial candidates for a batch; calling the attack
    counts its passes and verifies the candidates, so a subclass never reports an unverified bound.
    """

    name: str = "attack"
    norms: tuple[str, ...] = NORMS

    def __init__(self, norm: str = "linf", *, seed: int = 0):
        self.norm = check_norm(norm)
        if self.norm not in self.norms:
            raise InputError(f"attack {self.name!r} does not support norm {self.norm!r}",
                             f"use one of {self.norms} or another method")
        self.seed = seed

    @abstractmethod
    def _perturb(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor, domain: Domain) -> torch.Tensor:
        """Adversarial candidates for ``x`` (same shape), aiming to change ``pred`` with the smallest norm."""

    def __call__(self, model: nn.Module, x: torch.Tensor, pred: torch.Tensor | None = None,
                 domain: Domain = (0.0, 1.0)) -> AttackResult:
        counting, pred = counted_prediction(model, x, pred)
        with seeded(self.seed, x.device):  # the caller's random state is left as it was
            x_adv = self._perturb(counting, x, pred, domain)
        result = verify(counting, x, x_adv, pred, self.norm, domain)
        result.cost = counting.cost
        return result


