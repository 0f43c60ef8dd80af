"""Training objectives: one `Objective` class per training method, registered by name in `OBJECTIVES`.

A new method is a new `Objective` subclass (``name``, ``adversarial``, ``options``, ``loss``) and one entry here.
"""

from __future__ import annotations

from typing import Any

from ...errors import InputError
from .base import BatchContext, Objective, eval_mode
from .madry import MadryObjective
from .standard import StandardObjective
from .trades import TradesObjective

__all__ = [
    "OBJECTIVES",
    "BatchContext",
    "MadryObjective",
    "Objective",
    "StandardObjective",
    "TradesObjective",
    "eval_mode",
    "make_objective",
]

#: Training objectives by method name (``brittle train --method``).
OBJECTIVES: dict[str, type[Objective]] = {
    "standard": StandardObjective,
    "madry": MadryObjective,
    "trades": TradesObjective,
}


def make_objective(method: str, *, attack: str = "pgd", norm: str = "linf", steps: int = 10,
                   step_ratio: float | None = None, label_smoothing: float = 0.0, **options: Any) -> Objective:
    """The objective registered as ``method`` with the shared attack settings; of ``options`` (method-specific
    keywords such as ``trades_beta``) it receives those it lists in its ``options``, the rest are ignored."""
    if not isinstance(method, str) or method not in OBJECTIVES:
        raise InputError(f"unknown training method {method!r}", f"use one of {tuple(OBJECTIVES)}")
    cls = OBJECTIVES[method]
    own = {k: v for k, v in options.items() if k in cls.options}
    return cls(attack=attack, norm=norm, steps=steps, step_ratio=step_ratio, label_smoothing=label_smoothing, **own)
