"""Pseudo-labelling (Lee, 2013) at test time: cross-entropy with the model's own hard predictions."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import Adapter, _check_number


class PseudoLabel(Adapter):
    """``loss = mean over confident samples of CE(f(x), argmax f(x))``.

    Args:
        confidence: only samples whose top softmax probability is at least this take part (0 = all).
        **kwargs: see `Adapter`.
    """

    name = "pl"

    def __init__(self, *, confidence: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.confidence = confidence

    def _extra_params(self) -> dict[str, Any]:
        return {"confidence": self.confidence}

    def _validate(self) -> None:
        super()._validate()
        _check_number("confidence", self.confidence, 0.0, 1.0, open_low=False)

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.detach(), 1)
        conf, labels = probs.max(1)
        keep = conf >= self.confidence
        if not bool(keep.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[keep], labels[keep])
