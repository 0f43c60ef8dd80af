"""SHE: simplified Hopfield energy.

Zhang, Fu, Chen, Chen, Tan, *Out-of-Distribution Detection based on In-Distribution Data Patterns
Memorization with Modern Hopfield Energy*, ICLR 2023.

Fit: the stored pattern of class k is the mean penultimate feature ``S_k`` of the fit inputs of class k
that the model classifies correctly (with ``target=None``: the inputs predicted as k). Score, with the
predicted class ``ŷ``:

    score(x) = − ⟨h(x), S_ŷ⟩                                      (higher = more OOD)

A class without such a fit input gets the mean of all fit features (a note in ``notes_``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..models.features import Features
from ..scores.base import register
from ._base import OODDetector, as_labels, decode_array, encode_array, layer_matrix, t64


@register
class SHE(OODDetector):
    """``−⟨h, S_ŷ⟩`` with class patterns ``S_k`` from correctly classified ID inputs."""

    name = "she"
    requires_fit = True
    uses_layer = True
    paper = "Zhang et al., ICLR 2023"

    def __init__(self, layer: str | None = None) -> None:
        super().__init__(layer)
        self.patterns_: np.ndarray | None = None
        self.notes_: list[str] = []

    def _fit(self, features: Features, target: Any) -> None:
        h = layer_matrix(features, self._require_layer())
        c = features.logits.shape[1]
        pred = np.asarray(features.logits).argmax(1)
        y = as_labels(target, len(h), c, features.logits)
        keep = pred == y
        self.patterns_ = np.empty((c, h.shape[1]))
        self.notes_ = []
        for k in range(c):
            sel = keep & (y == k)
            if sel.any():
                self.patterns_[k] = h[sel].mean(0)
            else:
                self.patterns_[k] = h.mean(0)
                self.notes_.append(f"no correctly classified fit input of class {k}: its pattern is the mean feature")

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_fitted()
        h = outputs[self._require_layer()].double()
        patterns = t64(self.patterns_, h)[logits.argmax(1)]
        return -(h * patterns).sum(1)

    def _state(self) -> dict[str, Any]:
        return {"patterns": encode_array(self.patterns_)}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.patterns_ = decode_array(state["patterns"])
