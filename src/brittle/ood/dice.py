"""DICE: directed sparsification of the final linear layer.

Sun, Li, *DICE: Leveraging Sparsification for Out-of-Distribution Detection*, ECCV 2022 (arXiv 2111.09805).

Fit: the contribution of weight ``W_kj`` is ``V_kj = W_kj · E_ID[h_j]`` (mean penultimate activation over the
ID fit inputs); keep the weights whose contribution exceeds the ``p``-th percentile of all ``V`` (``p`` =
``sparsity``, default 90, as the official code's ``p``), zero the rest: ``W' = W ⊙ [V > percentile_p(V)]``.
Score: the wrapped logit detector (energy by default) on ``z' = W' h + b``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..scores.base import register
from ._base import check_percentile, decode_array, encode_array, t64
from ._modifier import ActivationModifier


@register
class DICE(ActivationModifier):
    """Sparsify the head to its top-contributing weights, then a logit detector."""

    name = "dice"
    paper = "Sun & Li, ECCV 2022"

    def __init__(self, sparsity: float = 90.0, detector: Any = "energy", layer: str | None = None,
                 head: str | None = None) -> None:
        super().__init__(detector, layer, head)
        self.sparsity = check_percentile(sparsity, "sparsity")
        self.mask_: np.ndarray | None = None

    def _fit_modifier(self, h: np.ndarray) -> None:
        contrib = self.head_weight_ * h.mean(0)[None, :]
        self.mask_ = contrib > np.percentile(contrib, self.sparsity)

    def weight(self, like: torch.Tensor) -> torch.Tensor:
        return t64(self.head_weight_ * self.mask_, like)

    def _params(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity}

    def _state(self) -> dict[str, Any]:
        return {"mask": encode_array(self.mask_.astype(np.uint8))}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.mask_ = decode_array(state["mask"]).astype(bool)
