"""The logit margin as a scorer: top-1 logit minus runner-up, from the forward pass that classifies.

Orientation: a *small* margin marks a brittle decision (``flag_below = True``). No fitting. For the
margins of a model on a dataset in one call, `brittle.logit_margins` returns them with predictions.
"""

from __future__ import annotations

import torch

from .base import Scorer, register


@register
class LogitMarginScorer(Scorer):
    """``score = z_(1) - z_(2)``, the gap between the two largest logits (>= 0)."""

    name = "logit_margin"
    flag_below = True

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        top2 = logits.topk(2, dim=1).values
        return (top2[:, 0] - top2[:, 1]).double()
