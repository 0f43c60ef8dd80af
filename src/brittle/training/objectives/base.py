"""The `Objective` base: the training loss of one batch, with the adversarial examples it needs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...core.validation import check_norm, check_positive_int
from ...errors import InputError
from ...margins.attacks.pgd import FIXED_BUDGET_ATTACKS, LossFn, run_attack

__all__ = ["BatchContext", "Objective", "eval_mode"]


@dataclass
class BatchContext:
    """One batch as the trainer hands it to `Objective.loss`, and the logits the objective leaves for the metrics.

    Inputs: ``eps`` (the scheduled budget at this iteration; 0 means no adversarial examples), the data
    ``domain`` and the ``generator`` of the attack's random starts. Outputs, set by the objective where it has
    them: ``clean_logits`` (logits of the clean batch, for the train clean accuracy; when left None the trainer
    runs one extra eval-mode forward after the update) and ``adv_logits`` (logits of the adversarial batch
    the update used; None: no adversarial accuracy for this batch).
    """

    eps: float
    domain: tuple[float, float] = (0.0, 1.0)
    generator: torch.Generator | None = None
    clean_logits: torch.Tensor | None = None
    adv_logits: torch.Tensor | None = None


def finite_at_least(value: Any, low: float, *, strict: bool = False) -> bool:
    """Whether ``value`` is a finite real number ``>= low`` (``> low`` when ``strict``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and (v > low if strict else v >= low)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; afterwards every module in its own previous mode (a linear probe
    trains its head in train mode while the frozen backbone stays in eval mode)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


class Objective:
    """A training objective: ``loss(model, x, y, context)`` is the scalar loss of one batch (mean over it).

    The trainer calls `loss` with the model in train mode and back-propagates the result. Objectives that
    train on adversarial examples set ``adversarial = True`` (the trainer then needs ``eps > 0`` and applies
    the ε schedule) and create them with `perturb` (attacks run in eval mode). Method-specific keywords of
    `brittle.training.train` an objective takes are listed in ``options`` and passed to its constructor.

    A new training method: a subclass with ``name``, ``adversarial``, ``options`` and `loss`, plus one entry in
    `brittle.training.objectives.OBJECTIVES`.
    """

    name: ClassVar[str] = ""
    adversarial: ClassVar[bool] = True
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, attack: str = "pgd", norm: str = "linf", steps: int = 10, step_ratio: float | None = None,
                 label_smoothing: float = 0.0):
        if attack not in FIXED_BUDGET_ATTACKS:
            raise InputError(f"unknown training attack {attack!r}", f"use one of {sorted(FIXED_BUDGET_ATTACKS)}")
        norm = check_norm(norm)
        check_positive_int(steps, "steps", "pass a positive number of attack steps")
        if step_ratio is not None and not finite_at_least(step_ratio, 0.0, strict=True):
            raise InputError(f"step_ratio must be a finite number > 0 or None, got {step_ratio!r}",
                             "pass e.g. step_ratio=1.25 (a multiple of eps), or None for the attack's default")
        if not (finite_at_least(label_smoothing, 0.0) and label_smoothing < 1):
            raise InputError(f"label_smoothing must be in [0, 1), got {label_smoothing}", "use e.g. 0.1")
        self.attack, self.norm, self.steps, self.step_ratio = attack, norm, steps, step_ratio
        self.label_smoothing = label_smoothing

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: BatchContext) -> torch.Tensor:
        """The scalar training loss of the batch ``(x, y)``; sets ``context.clean_logits`` / ``adv_logits``."""
        raise NotImplementedError

    def cross_entropy(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy with the objective's label smoothing."""
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: BatchContext, *,
                loss: str | LossFn = "ce") -> torch.Tensor | None:
        """Adversarial examples of ``(x, y)`` at ``context.eps`` maximising ``loss`` (the attack's last iterate,
        model in eval mode); None when ``context.eps`` is 0."""
        if context.eps <= 0:
            return None
        with eval_mode(model):
            return run_attack(self.attack, model, x, y, context.eps, norm=self.norm, steps=self.steps,
                              domain=context.domain, step_ratio=self.step_ratio, keep_best=False, loss=loss,
                              generator=context.generator)

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings."""
        out: dict[str, Any] = {"method": self.name, "label_smoothing": self.label_smoothing}
        if self.adversarial:
            out.update(attack=self.attack, norm=self.norm, steps=self.steps, step_ratio=self.step_ratio)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.describe().items())})"
