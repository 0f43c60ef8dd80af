"""RMD: relative Mahalanobis distance.

Ren, Fort, Liu, Roy, Padhy, Lakshminarayanan, *A Simple Fix to Mahalanobis Distance for Improving Near-OOD
Detection*, ICML 2021 UDL workshop (arXiv 2106.09022).

Fit on ID penultimate features as `Mahalanobis` (class means ``μ_k``, shared covariance ``Σ``) plus one
background Gaussian of all fit features (mean ``μ_0``, covariance ``Σ_0``). With
``MD_k(h) = (h − μ_k)ᵀ Σ⁺ (h − μ_k)`` and ``MD_0(h) = (h − μ_0)ᵀ Σ_0⁺ (h − μ_0)``:

    score(x) = min_k [ MD_k(h) − MD_0(h) ] = min_k MD_k(h) − MD_0(h)        (higher = more OOD)

Labels ``target`` are used when given, else the predicted classes. Fitting needs at least two inputs and two
classes among the labels (with one class the class Gaussian *is* the background one and ``MD_k − MD_0 ≡ 0``):
`InputError` otherwise — for one-class data use `Mahalanobis` or `KNN`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.features import Features
from ..scores.base import register
from ._base import OODDetector, as_labels, decode_array, encode_array, layer_matrix, t64
from .mahalanobis import class_gaussians, min_mahalanobis


@register
class RMD(OODDetector):
    """``min_k MD_k − MD_0`` on the penultimate features."""

    name = "rmd"
    requires_fit = True
    uses_layer = True
    min_fit_inputs = 2
    min_fit_classes = 2   # with one class MD_k − MD_0 ≡ 0: the score would be rounding noise
    paper = "Ren et al., 2021"

    def __init__(self, layer: str | None = None) -> None:
        super().__init__(layer)
        self.means_ = self.precision_ = self.bg_mean_ = self.bg_precision_ = None

    def _fit(self, features: Features, target: Any) -> None:
        from scipy.linalg import pinvh

        h = layer_matrix(features, self._require_layer())
        c = features.logits.shape[1]
        y = as_labels(target, len(h), c, features.logits)
        self.means_, self.precision_ = class_gaussians(h, y, c)
        self.bg_mean_ = h.mean(0)
        centred = h - self.bg_mean_
        self.bg_precision_ = pinvh(centred.T @ centred / len(h), check_finite=False)

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_fitted()
        h = outputs[self._require_layer()].double()
        md = min_mahalanobis(h, t64(self.means_, h), t64(self.precision_, h))
        md0 = min_mahalanobis(h, t64(self.bg_mean_[None, :], h), t64(self.bg_precision_, h))
        return md - md0

    def _state(self) -> dict[str, Any]:
        return {k: encode_array(getattr(self, k + "_")) for k in ("means", "precision", "bg_mean", "bg_precision")}

    def _set_state(self, state: dict[str, Any]) -> None:
        for k in ("means", "precision", "bg_mean", "bg_precision"):
            setattr(self, k + "_", decode_array(state[k]))
