"""KL matching: distance of the softmax to the closest class template.

Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt, Song, *Scaling Out-of-Distribution Detection
for Real-World Settings*, ICML 2022 (arXiv 1911.11132), section 4.

Fit on ID data: for each class k, the template ``d_k`` is the mean softmax of the fit inputs the model
*predicts* as k (labels are not used, as in the paper). Score:

    score(x) = min_k KL( softmax(z(x)) ‖ d_k ) = min_k Σ_j p_j (log p_j − log d_kj)     (higher = more OOD)

A class no fit input is predicted as gets the mean softmax of all fit inputs as template (a note in
``notes_``). Templates are clipped at 1e-12 before the log.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..models.features import Features
from ..scores.base import register
from ._base import OODDetector, decode_array, encode_array, t64


@register
class KLMatching(OODDetector):
    """``min_k KL(p ‖ d_k)`` with class templates ``d_k`` fitted on ID predictions."""

    name = "kl_matching"
    requires_fit = True
    paper = "Hendrycks et al., ICML 2022"

    def __init__(self) -> None:
        super().__init__()
        self.templates_: np.ndarray | None = None
        self.notes_: list[str] = []

    def _fit(self, features: Features, target: Any) -> None:
        z = np.asarray(features.logits, dtype=np.float64)
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        pred = p.argmax(1)
        c = p.shape[1]
        templates = np.empty((c, c))
        self.notes_ = []
        for k in range(c):
            sel = pred == k
            if sel.any():
                templates[k] = p[sel].mean(0)
            else:
                templates[k] = p.mean(0)
                self.notes_.append(f"no fit input predicted as class {k}: its template is the mean softmax")
        self.templates_ = templates

    def score_tensor(self, logits: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_fitted()
        logp = torch.log_softmax(logits.double(), dim=1)
        p = logp.exp()
        log_d = torch.log(t64(self.templates_, logits).clamp_min(1e-12))          # (C, C)
        neg_entropy = (p * logp).sum(1, keepdim=True)                              # Σ p log p
        cross = p @ log_d.T                                                        # Σ_j p_j log d_kj
        return (neg_entropy - cross).min(dim=1).values

    def _state(self) -> dict[str, Any]:
        return {"templates": encode_array(self.templates_)}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.templates_ = decode_array(state["templates"])
