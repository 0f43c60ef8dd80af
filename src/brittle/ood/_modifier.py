"""Activation modifiers (ReAct, ASH, SCALE, DICE) as wrapper detectors.

A modifier changes the penultimate features ``h`` (ReAct, ASH, SCALE) or the final linear layer's weights
(DICE), recomputes the logits through the final linear layer — ``z' = W' h' + b`` — and hands them to a
logit-based detector (``detector=``: ``"energy"`` by default, as in the papers; any registered detector that
reads only logits and needs no model: msp, max_logit, energy, entropy, gen, kl_matching, odin with eps=0, or
its ``to_dict()``).

Which layer: the penultimate layer ``h`` is the input of the final linear layer (see `brittle.ood._base`:
the head is the last ``nn.Linear``, ``h`` the module before it in its ``nn.Sequential``, or ``layer=``);
fitting checks that ``h Wᵀ + b`` rebuilds the model's logits, so a wrong layer is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..models.features import Features
from ..scores.base import SCORERS, Scorer, _load_builtin, register  # noqa: F401
from ._base import OODDetector, t64


def make_inner(detector: Any) -> Scorer:
    """The wrapped logit-based detector from a name, a `to_dict` description or an instance."""
    from ..scores.base import make_scorer, scorer_from_dict

    if isinstance(detector, str):
        inner = make_scorer(detector)
    elif isinstance(detector, dict):
        inner = scorer_from_dict(detector)
    elif isinstance(detector, Scorer):
        inner = detector
    else:
        raise InputError(f"detector must be a detector name or description, got {type(detector).__name__}",
                         "pass e.g. detector='energy'")
    if (inner.flag_below or inner.layers or inner.needs_model or getattr(inner, "uses_layer", False)
            or getattr(inner, "uses_head", False)):
        raise InputError(f"an activation modifier wraps a detector that reads only logits; {inner.name!r} does not",
                         "pass detector= one of msp, max_logit, energy, entropy, gen, kl_matching")
    return inner


class ActivationModifier(OODDetector):
    """Base of ReAct / ASH / SCALE / DICE: modified logits → wrapped detector."""

    requires_fit = True
    uses_layer = True
    uses_head = True

    def __init__(self, detector: Any = "energy", layer: str | None = None, head: str | None = None) -> None:
        super().__init__(layer, head)
        self.detector = make_inner(detector)

    # what subclasses change ------------------------------------------------------------------------
    def _fit_modifier(self, h: np.ndarray) -> None:
        """Learn the modifier's statistics from ID penultimate features (default: none)."""

    def modify(self, h: torch.Tensor) -> torch.Tensor:
        """Modified penultimate features (float64)."""
        return h

    def weight(self, like: torch.Tensor) -> torch.Tensor:
        """The (possibly modified) head weight ``W'`` as float64 on ``like``'s device."""
        return t64(self.head_weight_, like)

    # shared ----------------------------------------------------------------------------------------
    def modified_logits(self, h: torch.Tensor) -> torch.Tensor:
        h = h.double()
        return self.modify(h) @ self.weight(h).T + t64(self.head_bias_, h)

    def _fit(self, features: Features, target: Any) -> None:
        h = self._check_head(features)
        self._fit_modifier(h)
        z = self.modified_logits(torch.as_tensor(h)).numpy()
        self.detector.fit(Features(z.astype(np.float32)), target)

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_fitted()
        z = self.modified_logits(outputs[self._require_layer()])
        return self.detector.score_tensor(z, {}).double()

    def get_params(self) -> dict[str, Any]:
        p = super().get_params()
        p["detector"] = {"scorer": self.detector.name, "params": self.detector.get_params(), "state": {}}
        return p

    def get_state(self) -> dict[str, Any]:
        s = super().get_state()
        s["detector_state"] = self.detector.get_state()
        return s

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.detector.set_state(state.get("detector_state") or {})


def top_k_mask(h: torch.Tensor, percentile: float) -> tuple[torch.Tensor, int]:
    """Per row, a mask of the ``k = n − round(n·percentile/100)`` largest entries (ASH / SCALE's rule)."""
    n = h.shape[1]
    k = max(1, n - int(np.round(n * percentile / 100.0)))
    idx = h.topk(k, dim=1).indices
    mask = torch.zeros_like(h, dtype=torch.bool).scatter_(1, idx, True)
    return mask, k
